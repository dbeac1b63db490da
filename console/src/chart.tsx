// A small SVG line chart: one line per provider, a dot per data point.
export type Line = { name: string; points: { at: number; value: number }[] };

const W = 640;
const H = 180;
const PAD = { left: 48, right: 12, top: 10, bottom: 22 };
const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];

type Props = { title: string; unit: string; lines: Line[]; span: [number, number] };

// ``span``: the time axis (the same for every chart of a page, so they line up).
export function Chart({ title, unit, lines, span }: Props) {
  const all = lines.flatMap((l) => l.points);
  const [t0, t1] = span;
  const highest = Math.max(0, ...all.map((p) => p.value));
  const top = highest > 0 ? highest * 1.1 : 1;
  const x = (at: number) =>
    PAD.left + (t1 > t0 ? ((at - t0) / (t1 - t0)) * (W - PAD.left - PAD.right) : 0);
  const y = (v: number) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
  const time = (at: number) => new Date(at).toLocaleTimeString();
  return (
    <figure class="chart" data-title={title}>
      <figcaption>
        {title} <span class="unit">({unit})</span>
        {lines.map((l, i) => (
          <span class="legend" style={`color:${COLOURS[i % COLOURS.length]}`}>
            ● {l.name}
          </span>
        ))}
      </figcaption>
      {all.length === 0 ? (
        <p class="empty">No data yet: a point appears at each sample where it moved.</p>
      ) : (
        <svg class="chart" viewBox={`0 0 ${W} ${H}`} role="img" aria-label={title}>
          <line class="axis" x1={PAD.left} y1={H - PAD.bottom} x2={W - PAD.right} y2={H - PAD.bottom} />
          <line class="axis" x1={PAD.left} y1={PAD.top} x2={PAD.left} y2={H - PAD.bottom} />
          <text x={PAD.left - 4} y={PAD.top + 8} text-anchor="end">{top.toPrecision(3)}</text>
          <text x={PAD.left - 4} y={H - PAD.bottom} text-anchor="end">0</text>
          <text x={PAD.left} y={H - 6}>{time(t0)}</text>
          <text x={W - PAD.right} y={H - 6} text-anchor="end">{time(t1)}</text>
          {lines.map((l, i) => {
            const colour = COLOURS[i % COLOURS.length];
            return (
              <g data-provider={l.name}>
                <polyline
                  fill="none"
                  stroke={colour}
                  stroke-width="2"
                  points={l.points.map((p) => `${x(p.at)},${y(p.value)}`).join(" ")}
                />
                {l.points.map((p) => (
                  <circle class="point" cx={x(p.at)} cy={y(p.value)} r="3" fill={colour}>
                    <title>{`${l.name} ${time(p.at)}: ${p.value.toFixed(2)} ${unit}`}</title>
                  </circle>
                ))}
              </g>
            );
          })}
        </svg>
      )}
    </figure>
  );
}
