// smsgw operator console: a single page served at /console on the HTTP port.
import { render } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { Code, ConnectError } from "@connectrpc/connect";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { makeApi, loadCredential, saveCredential, type Api, type Credential } from "./api";
import { Chart } from "./chart";
import { parseExposition, providersOf, series, type Sample } from "./metrics";
import { BatchStatus, MessageStatus } from "../../generated/ts/sms/v1/common_pb";
import type { ConsoleBatch, ConsoleMessage } from "../../generated/ts/sms/v1/console_pb";
import type { MessageStatusEvent } from "../../generated/ts/sms/v1/message_pb";
import { DeliveryState, EventType, type Webhook, type WebhookDelivery } from "../../generated/ts/sms/v1/webhook_pb";
import { SuppressionReason, type Suppression } from "../../generated/ts/sms/v1/suppression_pb";

const BATCH_POLL_MS = 1000;
const METRICS_POLL_MS = 2000;
const SAMPLES_KEPT = 300; // ten minutes at one sample every two seconds

const enumName = (e: Record<number, string>, v: number, prefix: string) =>
  (e[v] ?? String(v)).replace(prefix, "");
const batchStatus = (v: BatchStatus) => enumName(BatchStatus, v, "");
const messageStatus = (v: MessageStatus) => enumName(MessageStatus, v, "");
const when = (t: Timestamp | undefined) => (t ? timestampDate(t).toLocaleString() : "");

function errorText(err: unknown): string {
  const e = ConnectError.from(err);
  return `${Code[e.code] ?? e.code}: ${e.rawMessage}`;
}

// Calls fn now and every ms after it settles, until the deps change or it answers
// false (nothing more will change).
function usePoll(fn: () => Promise<boolean | void>, ms: number, deps: unknown[]): void {
  const current = useRef(fn);
  current.current = fn;
  useEffect(() => {
    let stopped = false;
    let timer: number | undefined;
    const tick = async () => {
      let again = true;
      try {
        again = (await current.current()) !== false;
      } finally {
        if (!stopped && again) timer = window.setTimeout(tick, ms);
      }
    };
    void tick();
    return () => {
      stopped = true;
      window.clearTimeout(timer);
    };
  }, deps);
}

function Login({ onLogin }: { onLogin: (c: Credential, api: Api) => void }) {
  const [key, setKey] = useState("");
  const [secret, setSecret] = useState("");
  const [error, setError] = useState("");
  const submit = async (ev: Event) => {
    ev.preventDefault();
    const credential = { key: key.trim(), secret: secret.trim() };
    const api = makeApi(credential);
    try {
      await api.console.listBatches({ pageSize: 1 });
      onLogin(credential, api);
    } catch (err) {
      setError(errorText(err));
    }
  };
  return (
    <form id="login" onSubmit={submit}>
      <h1>smsgw console</h1>
      <label>
        API key <input id="api-key" autocomplete="username" value={key} onInput={(e) => setKey(e.currentTarget.value)} />
      </label>
      <label>
        API secret{" "}
        <input id="api-secret" type="password" autocomplete="current-password" value={secret} onInput={(e) => setSecret(e.currentTarget.value)} />
      </label>
      <button type="submit">Log in</button>
      <p class="note">Kept in this tab's session storage only; sent only to this gateway.</p>
      {error && <p class="error" role="alert">{error}</p>}
    </form>
  );
}

function Progress({ b }: { b: ConsoleBatch }) {
  const batch = b.batch!;
  const done = batch.delivered + batch.failed;
  const pct = batch.total ? Math.round((100 * done) / batch.total) : 0;
  return (
    <div class="progress" title={`${done} of ${batch.total} final`}>
      <div class="bar delivered" style={`width:${batch.total ? (100 * batch.delivered) / batch.total : 0}%`} />
      <div class="bar failed" style={`width:${batch.total ? (100 * batch.failed) / batch.total : 0}%`} />
      <span>{pct}%</span>
    </div>
  );
}

function Batches({ api, admin, onOpen }: { api: Api; admin: boolean; onOpen: (taskId: string) => void }) {
  const [batches, setBatches] = useState<ConsoleBatch[]>([]);
  const [error, setError] = useState("");
  usePoll(
    async () => {
      try {
        const page = await api.console.listBatches({ pageSize: 50 });
        setBatches(page.batches);
        setError("");
      } catch (err) {
        setError(errorText(err));
      }
    },
    BATCH_POLL_MS,
    [api],
  );
  return (
    <section id="batches">
      <h2>Batches</h2>
      {error && <p class="error">{error}</p>}
      {batches.length === 0 ? (
        <p class="empty">No batches.</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th>task id</th>
              {admin && <th>account</th>}
              <th>status</th>
              <th>total</th>
              <th>sent</th>
              <th>delivered</th>
              <th>failed</th>
              <th>progress</th>
              <th>reference</th>
              <th>created</th>
            </tr>
          </thead>
          <tbody>
            {batches.map((b) => (
              <tr class="result" data-task-id={b.batch!.taskId} key={b.batch!.taskId} title="Show its messages" onClick={() => onOpen(b.batch!.taskId)}>
                <td class="id">{b.batch!.taskId}</td>
                {admin && <td>{String(b.accountId)}</td>}
                <td class="status">{batchStatus(b.batch!.status)}</td>
                <td>{b.batch!.total}</td>
                <td>{b.batch!.sent}</td>
                <td class="delivered">{b.batch!.delivered}</td>
                <td>{b.batch!.failed}</td>
                <td>
                  <Progress b={b} />
                </td>
                <td>{b.batch!.reference}</td>
                <td>{when(b.batch!.createdAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function History({ api, id }: { api: Api; id: string }) {
  const [message, setMessage] = useState<ConsoleMessage | null>(null);
  const [events, setEvents] = useState<MessageStatusEvent[]>([]);
  const [error, setError] = useState("");
  usePoll(
    async () => {
      try {
        const h = await api.console.getMessageHistory({ id });
        setMessage(h.message ?? null);
        setEvents(h.events);
        setError("");
        return (h.message?.state?.status ?? 0) < MessageStatus.DELIVERED; // final: done
      } catch (err) {
        setError(errorText(err));
        return ConnectError.from(err).code !== Code.NotFound;
      }
    },
    2000,
    [api, id],
  );
  const s = message?.state;
  return (
    <div id="history" data-message-id={id}>
      <h3>Message {id}</h3>
      {error && <p class="error">{error}</p>}
      {s && (
        <dl>
          <dt>to</dt>
          <dd>{s.toNumber}</dd>
          <dt>status</dt>
          <dd class="status">{messageStatus(s.status)}</dd>
          <dt>provider</dt>
          <dd>{s.provider || "-"}</dd>
          <dt>error</dt>
          <dd>{s.errorCode || "-"}</dd>
          <dt>reference</dt>
          <dd>{s.reference || "-"}</dd>
          <dt>batch</dt>
          <dd>{message!.batchId || "-"}</dd>
          <dt>account</dt>
          <dd>{String(message!.accountId)}</dd>
          <dt>created</dt>
          <dd>{when(message!.createTime)}</dd>
        </dl>
      )}
      <ol class="events">
        {events.map((e) => (
          <li data-status={messageStatus(e.status)} key={String(e.eventId)}>
            <time>{when(e.occurredAt)}</time> <b>{messageStatus(e.status)}</b>
            {e.errorCode && <span class="error-code"> {e.errorCode}</span>}
          </li>
        ))}
      </ol>
    </div>
  );
}

export type Search = { query: string; at: number }; // at: a new search for the same text

function Messages({ api, admin, asked }: { api: Api; admin: boolean; asked: Search | null }) {
  const [query, setQuery] = useState("");
  const [found, setFound] = useState<ConsoleMessage[] | null>(null);
  const [open, setOpen] = useState("");
  const [error, setError] = useState("");
  const run = async (text: string) => {
    setError("");
    setOpen("");
    try {
      const r = await api.console.searchMessages({ query: text.trim(), pageSize: 100 });
      setFound(r.messages);
      if (r.messages.length === 1) setOpen(r.messages[0]!.state!.id);
    } catch (err) {
      setFound(null);
      setError(errorText(err));
    }
  };
  const search = (ev: Event) => {
    ev.preventDefault();
    void run(query);
  };
  useEffect(() => {
    if (!asked) return;
    setQuery(asked.query);
    void run(asked.query);
  }, [asked]);
  return (
    <section id="messages">
      <h2>Messages</h2>
      <form id="search" onSubmit={search}>
        <input id="query" placeholder="message id, batch id, +number or reference" value={query} onInput={(e) => setQuery(e.currentTarget.value)} />
        <button type="submit">Find</button>
      </form>
      {error && <p class="error">{error}</p>}
      {found && found.length === 0 && <p class="empty">No message matches.</p>}
      {found && found.length > 0 && (
        <table>
          <thead>
            <tr>
              <th>id</th>
              {admin && <th>account</th>}
              <th>to</th>
              <th>status</th>
              <th>provider</th>
              <th>reference</th>
              <th>updated</th>
            </tr>
          </thead>
          <tbody>
            {found.map((m) => (
              <tr class="result" data-message-id={m.state!.id} key={m.state!.id} onClick={() => setOpen(m.state!.id)}>
                <td class="id">
                  <a href="#" onClick={(e) => e.preventDefault()}>{m.state!.id}</a>
                </td>
                {admin && <td>{String(m.accountId)}</td>}
                <td>{m.state!.toNumber}</td>
                <td>{messageStatus(m.state!.status)}</td>
                <td>{m.state!.provider}</td>
                <td>{m.state!.reference}</td>
                <td>{when(m.state!.updatedAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {open && <History api={api} id={open} key={open} />}
    </section>
  );
}

const BREAKER = ["closed", "half-open", "open"];

// Samples /metrics from login on (admin credentials), whichever tab is shown, so the
// chart already has the recent past when it is opened.
function useMetricSamples(enabled: boolean): { samples: Sample[]; error: string } {
  const [samples, setSamples] = useState<Sample[]>([]);
  const [error, setError] = useState("");
  usePoll(
    async () => {
      if (!enabled) {
        setSamples((old) => (old.length ? [] : old)); // a logout forgets them
        return;
      }
      try {
        const r = await fetch("/metrics", { cache: "no-store" });
        if (!r.ok) throw new Error(`/metrics answered ${r.status}`);
        const s = parseExposition(await r.text(), Date.now());
        setSamples((old) => [...old.slice(-(SAMPLES_KEPT - 1)), s]);
        setError("");
      } catch (err) {
        setError(String(err));
      }
    },
    METRICS_POLL_MS,
    [enabled],
  );
  return { samples, error };
}

function Providers({ samples, error }: { samples: Sample[]; error: string }) {
  const providers = providersOf(samples);
  const last = samples[samples.length - 1];
  const lines = providers.map((p) => ({ name: p, points: series(samples, p) }));
  const span: [number, number] = [samples[0]?.at ?? 0, last?.at ?? 0];
  return (
    <section id="providers">
      <h2>Providers</h2>
      <p class="note">
        Gateway-wide (every account, this replica), sampled from <code>/metrics</code> every{" "}
        {METRICS_POLL_MS / 1000} s while this page is open.
      </p>
      {error && <p class="error">{error}</p>}
      <Chart
        title="Delivered per second"
        unit="messages/s"
        span={span}
        lines={lines.map((l) => ({ name: l.name, points: l.points.map((p) => ({ at: p.at, value: p.rate })) }))}
      />
      <Chart
        title="Failed per second"
        unit="messages/s"
        span={span}
        lines={lines.map((l) => ({ name: l.name, points: l.points.map((p) => ({ at: p.at, value: p.failRate })) }))}
      />
      <Chart
        title="Provider request time (mean)"
        unit="ms"
        span={span}
        lines={lines.map((l) => ({
          name: l.name,
          points: l.points.flatMap((p) => (p.latencyMs === null ? [] : [{ at: p.at, value: p.latencyMs }])),
        }))}
      />
      {last && (
        <div class="state">
          <table id="breakers">
            <caption>Circuit breakers</caption>
            <tbody>
              {[...last.breakers].map(([name, v]) => (
                <tr data-provider={name} class={`breaker-${BREAKER[v] ?? v}`}>
                  <td>{name}</td>
                  <td>{BREAKER[v] ?? v}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <table id="backlog">
            <caption>Backlog</caption>
            <tbody>
              {[...last.backlog].map(([status, v]) => (
                <tr>
                  <td>outbox {status}</td>
                  <td>{v}</td>
                </tr>
              ))}
              {last.webhookBacklog !== null && (
                <tr>
                  <td>webhook deliveries pending</td>
                  <td>{last.webhookBacklog}</td>
                </tr>
              )}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

type WebhookView = { hook: Webhook; failing: WebhookDelivery[] };

function Webhooks({ api }: { api: Api }) {
  const [hooks, setHooks] = useState<WebhookView[] | null>(null);
  const [error, setError] = useState("");
  usePoll(
    async () => {
      try {
        const list = await api.webhooks.listWebhooks({ pageSize: 100 });
        const views = await Promise.all(
          list.webhooks.map(async (hook) => {
            const d = await api.webhooks.listWebhookDeliveries({ webhookId: hook.id, pageSize: 100 });
            const failing = d.deliveries.filter(
              (x) => x.state === DeliveryState.FAILED || (x.state === DeliveryState.PENDING && x.attempts > 0),
            );
            return { hook, failing };
          }),
        );
        setHooks(views);
        setError("");
      } catch (err) {
        setError(errorText(err));
      }
    },
    5000,
    [api],
  );
  return (
    <section id="webhooks">
      <h2>Webhooks</h2>
      <p class="note">This credential's account's endpoints, with their failing deliveries (given up, or retrying).</p>
      {error && <p class="error">{error}</p>}
      {hooks && hooks.length === 0 && <p class="empty">No webhooks.</p>}
      {hooks?.map(({ hook, failing }) => (
        <div class="webhook" data-webhook-id={String(hook.id)}>
          <h3>
            {hook.url} {hook.disabled && <span class="badge">disabled</span>}
          </h3>
          <p>
            {hook.eventTypes.map((t) => enumName(EventType, t, "")).join(", ")} · {failing.length} failing
          </p>
          {failing.length > 0 && (
            <table>
              <thead>
                <tr>
                  <th>delivery</th>
                  <th>event</th>
                  <th>state</th>
                  <th>attempts</th>
                  <th>last HTTP status</th>
                  <th>next attempt</th>
                </tr>
              </thead>
              <tbody>
                {failing.map((d) => (
                  <tr>
                    <td class="id">{d.id}</td>
                    <td>{enumName(EventType, d.eventType, "")}</td>
                    <td>{enumName(DeliveryState, d.state, "")}</td>
                    <td>{d.attempts}</td>
                    <td>{d.lastHttpStatus || "-"}</td>
                    <td>{when(d.nextAttemptTime)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
      ))}
    </section>
  );
}

function Suppressions({ api }: { api: Api }) {
  const [rows, setRows] = useState<Suppression[]>([]);
  const [next, setNext] = useState("");
  const [error, setError] = useState("");
  const load = async (token: string) => {
    try {
      const page = await api.suppressions.listSuppressions({ pageSize: 100, pageToken: token });
      setRows((old) => (token ? [...old, ...page.suppressions] : page.suppressions));
      setNext(page.nextPageToken);
      setError("");
    } catch (err) {
      setError(errorText(err));
    }
  };
  useEffect(() => void load(""), [api]);
  return (
    <section id="suppressions">
      <h2>Suppressions</h2>
      <p class="note">This credential's account's suppressed numbers.</p>
      {error && <p class="error">{error}</p>}
      {rows.length === 0 ? (
        <p class="empty">No suppressions.</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th>number</th>
              <th>reason</th>
              <th>since</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((s) => (
              <tr data-mobile={s.mobile}>
                <td>{s.mobile}</td>
                <td>{enumName(SuppressionReason, s.reason, "")}</td>
                <td>{when(s.createTime)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {next && <button onClick={() => void load(next)}>More</button>}
    </section>
  );
}

type Tab = "batches" | "messages" | "providers" | "webhooks" | "suppressions";

function App() {
  const [credential, setCredential] = useState<Credential | null>(loadCredential);
  const [api, setApi] = useState<Api | null>(() => (credential ? makeApi(credential) : null));
  const [admin, setAdmin] = useState(false);
  const [tab, setTab] = useState<Tab>("batches");
  const metrics = useMetricSamples(admin);
  const [asked, setAsked] = useState<Search | null>(null);
  useEffect(() => {
    if (!api) return;
    // An admin credential may list accounts; any other is refused PERMISSION_DENIED.
    api.accounts.listAccounts({ pageSize: 1 }).then(
      () => setAdmin(true),
      () => setAdmin(false),
    );
  }, [api]);
  if (!credential || !api) {
    return (
      <Login
        onLogin={(c, a) => {
          saveCredential(c);
          setCredential(c);
          setApi(a);
        }}
      />
    );
  }
  const tabs: Tab[] = admin
    ? ["batches", "messages", "providers", "webhooks", "suppressions"]
    : ["batches", "messages", "webhooks", "suppressions"];
  return (
    <div id="app">
      <header>
        <strong>smsgw console</strong>
        <nav>
          {tabs.map((t) => (
            <button id={`tab-${t}`} class={t === tab ? "active" : ""} onClick={() => setTab(t)}>
              {t}
            </button>
          ))}
        </nav>
        <span id="who">
          {credential.key} {admin && <span class="badge">admin: every account</span>}
        </span>
        <button
          id="logout"
          onClick={() => {
            saveCredential(null);
            setCredential(null);
            setApi(null);
            setAdmin(false);
            setTab("batches");
            setAsked(null);
          }}
        >
          Log out
        </button>
      </header>
      <main>
        {tab === "batches" && (
          <Batches
            api={api}
            admin={admin}
            onOpen={(taskId) => {
              setAsked({ query: taskId, at: Date.now() });
              setTab("messages");
            }}
          />
        )}
        {/* Kept while other tabs are shown: the search and its results stay. */}
        <div hidden={tab !== "messages"}>
          <Messages api={api} admin={admin} asked={asked} />
        </div>
        {tab === "providers" && admin && <Providers samples={metrics.samples} error={metrics.error} />}
        {tab === "webhooks" && <Webhooks api={api} />}
        {tab === "suppressions" && <Suppressions api={api} />}
      </main>
    </div>
  );
}

render(<App />, document.getElementById("root")!);
