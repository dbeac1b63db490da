// Per-provider delivery rate and request latency over time, from the gateway's own
// Prometheus exposition (GET /metrics on this port), sampled while the page is open.
// Gateway-wide figures (every account): the console shows them to admin credentials
// only.

export type Sample = {
  at: number; // ms since the epoch
  delivered: Map<string, number>; // smsgw_messages_total{status="DELIVERED"} by provider
  failed: Map<string, number>; // FAILED, UNDELIVERED, REJECTED by provider
  durationSum: Map<string, number>; // smsgw_provider_request_duration_seconds_sum
  durationCount: Map<string, number>; // ..._count
  breakers: Map<string, number>; // smsgw_breaker_state: 0 closed, 1 half-open, 2 open
  backlog: Map<string, number>; // smsgw_outbox_backlog by status
  webhookBacklog: number | null;
};

export type Point = { at: number; rate: number; failRate: number; latencyMs: number | null };

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
const FAILED = new Set(["FAILED", "UNDELIVERED", "REJECTED"]);

function labels(text: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!text) return out;
  for (const m of text.matchAll(LABEL)) out[m[1]!] = m[2]!.replace(/\\(.)/g, "$1");
  return out;
}

function add(map: Map<string, number>, key: string, value: number): void {
  map.set(key, (map.get(key) ?? 0) + value);
}

export function parseExposition(text: string, at: number): Sample {
  const s: Sample = {
    at,
    delivered: new Map(),
    failed: new Map(),
    durationSum: new Map(),
    durationCount: new Map(),
    breakers: new Map(),
    backlog: new Map(),
    webhookBacklog: null,
  };
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const [, name, labelText, raw] = m;
    const value = Number(raw);
    if (!Number.isFinite(value)) continue;
    const l = labels(labelText);
    const provider = l["provider"] ?? "";
    switch (name) {
      case "smsgw_messages_total":
        if (l["status"] === "DELIVERED") add(s.delivered, provider, value);
        else if (FAILED.has(l["status"] ?? "")) add(s.failed, provider, value);
        break;
      case "smsgw_provider_request_duration_seconds_sum":
        add(s.durationSum, provider, value);
        break;
      case "smsgw_provider_request_duration_seconds_count":
        add(s.durationCount, provider, value);
        break;
      case "smsgw_breaker_state":
        s.breakers.set(provider, value);
        break;
      case "smsgw_outbox_backlog":
        s.backlog.set(l["status"] ?? "", value);
        break;
      case "smsgw_webhook_backlog":
        s.webhookBacklog = value;
        break;
    }
  }
  return s;
}

export function providersOf(samples: Sample[]): string[] {
  const names = new Set<string>();
  for (const s of samples) {
    for (const k of s.delivered.keys()) names.add(k);
    for (const k of s.failed.keys()) names.add(k);
    for (const k of s.durationCount.keys()) names.add(k);
  }
  names.delete("");
  return [...names].sort();
}

// One point per pair of consecutive samples: deliveries per second between them and
// the mean provider request time of the requests made between them.
export function series(samples: Sample[], provider: string): Point[] {
  const points: Point[] = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1]!;
    const b = samples[i]!;
    const seconds = (b.at - a.at) / 1000;
    if (seconds <= 0) continue;
    const delta = (m: (s: Sample) => Map<string, number>) =>
      Math.max(0, (m(b).get(provider) ?? 0) - (m(a).get(provider) ?? 0));
    const count = delta((s) => s.durationCount);
    points.push({
      at: b.at,
      rate: delta((s) => s.delivered) / seconds,
      failRate: delta((s) => s.failed) / seconds,
      latencyMs: count > 0 ? (delta((s) => s.durationSum) / count) * 1000 : null,
    });
  }
  return points;
}
