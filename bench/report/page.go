package report

// pageHTML is the report's template: everything inline, system fonts only.
const pageHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>xksbench {{.Res.Kind}} · {{.Res.Verdict.Result}} · {{.Res.StartedAt.Format "2006-01-02 15:04"}}</title>
<style>
:root { --ink:#1f2937; --muted:#6b7280; --line:#e5e7eb; --bg:#f8fafc; --card:#fff;
  --pass:#15803d; --fail:#b91c1c; --invalid:#b45309;
  --p50:#2563eb; --p99:#f59e0b; --max:#7c3aed; --budget:#dc2626; --errors:#ea580c; --hook:#0d9488; --ok:#16a34a; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--ink); background:var(--bg); }
main { max-width:1040px; margin:0 auto; padding:24px 20px 48px; }
header { display:flex; align-items:center; gap:16px; flex-wrap:wrap; }
h1 { font-size:22px; margin:0; font-weight:650; }
h2 { font-size:16px; margin:32px 0 8px; font-weight:650; }
.sub { color:var(--muted); }
.pill { font-weight:700; letter-spacing:.04em; padding:6px 14px; border-radius:999px; color:#fff; font-size:15px; }
.pill.pass { background:var(--pass); } .pill.fail { background:var(--fail); } .pill.invalid { background:var(--invalid); }
.headline { margin:10px 0 0; font-size:15px; }
.reasons { margin:8px 0 0; padding-left:20px; }
.reasons li.reason { color:var(--fail); } .reasons li.note { color:var(--muted); }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(120px,1fr)); gap:10px; margin-top:20px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:10px 12px; }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.05em; }
.card .value { font-size:22px; font-weight:650; font-variant-numeric:tabular-nums; }
.card.over .value { color:var(--fail); }
.card .note { color:var(--muted); font-size:12px; }
.panel { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:12px 12px 6px; }
.panel p { margin:0 0 6px; color:var(--muted); font-size:13px; }
svg { width:100%; height:auto; display:block; }
svg text { font:11px system-ui,sans-serif; fill:var(--muted); }
svg .axis-title { font-size:12px; fill:var(--ink); }
svg .grid { stroke:var(--line); stroke-width:1; }
svg .plot { fill:none; stroke:#cbd5e1; }
svg polyline { fill:none; stroke:currentColor; stroke-width:1.6; stroke-linejoin:round; }
svg circle.dot { fill:currentColor; stroke:none; }
svg .s-p50 { color:var(--p50); } svg .s-p99 { color:var(--p99); stroke-width:2.2; }
svg .s-max { color:var(--max); stroke-width:1; opacity:.7; }
svg .s-offered { color:#9ca3af; stroke-width:3; } svg .s-achieved { color:var(--ok); stroke-width:2; }
svg .s-errors { fill:var(--errors); opacity:.8; }
svg .requested { stroke:#9ca3af; stroke-dasharray:3 4; } svg .requested-label { fill:#9ca3af; }
svg .budget { stroke:var(--budget); stroke-dasharray:6 4; stroke-width:1.4; } svg .budget-label { fill:var(--budget); font-weight:600; }
svg .marker line { stroke:var(--hook); stroke-width:1.5; stroke-dasharray:2 3; } svg .marker text { fill:var(--hook); font-weight:600; }
svg .err-band { fill:var(--errors); opacity:.1; } svg .drain { fill:#94a3b8; opacity:.15; }
svg .hover { fill:transparent; } svg .hover:hover { fill:rgba(37,99,235,.08); }
svg .op-all { color:var(--ink); stroke-width:2.4; } svg .op-encrypt { color:var(--p50); } svg .op-decrypt { color:var(--ok); }
svg .op-metadata { color:var(--p99); } svg .op-health { color:var(--hook); }
svg .step.pass { fill:var(--pass); } svg .step.fail { fill:var(--fail); } svg .step.invalid { fill:var(--invalid); }
.legend { display:flex; gap:16px; flex-wrap:wrap; font-size:12px; color:var(--muted); margin:4px 0 6px; }
.legend span::before { content:""; display:inline-block; width:14px; height:3px; margin:0 6px 3px 0; vertical-align:middle; background:currentColor; }
.l-p50 { color:var(--p50); } .l-p99 { color:var(--p99); } .l-max { color:var(--max); } .l-budget { color:var(--budget); }
.l-hook { color:var(--hook); } .l-offered { color:#9ca3af; } .l-achieved { color:var(--ok); } .l-errors { color:var(--errors); }
.l-op-all { color:var(--ink); } .l-op-encrypt { color:var(--p50); } .l-op-decrypt { color:var(--ok); } .l-op-metadata { color:var(--p99); } .l-op-health { color:var(--hook); }
table { border-collapse:collapse; width:100%; background:var(--card); border:1px solid var(--line); border-radius:10px; overflow:hidden; }
th, td { padding:6px 10px; border-bottom:1px solid var(--line); text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
th { background:#f1f5f9; font-weight:600; font-size:12px; color:var(--muted); }
th:first-child, td:first-child, td.text, th.text { text-align:left; }
td.wrap { white-space:normal; text-align:left; }
tr:last-child td { border-bottom:none; }
td.over { color:var(--fail); font-weight:600; }
dl { display:grid; grid-template-columns:max-content 1fr; gap:4px 16px; margin:0; background:var(--card); border:1px solid var(--line); border-radius:10px; padding:12px; }
dt { color:var(--muted); } dd { margin:0; }
code, pre { font-family:ui-monospace,SFMono-Regular,Menlo,monospace; font-size:12px; }
pre { margin:4px 0 0; white-space:pre-wrap; color:var(--muted); }
footer { margin-top:32px; color:var(--muted); font-size:12px; }
</style>
</head>
<body><main>
<header>
  <span class="pill {{.VerdictClass}}">{{.Res.Verdict.Result}}</span>
  <div><h1>xksbench {{.Res.Kind}} · {{num .Res.Config.RatePerKey}}/s per key × {{.Res.Config.Keys}} key{{if gt .Res.Config.Keys 1}}s{{end}}</h1>
  <div class="sub">{{join .Res.Target.Endpoints ", "}} · {{.Res.Target.URIPath}} · {{.Res.StartedAt.Format "2006-01-02 15:04:05 MST"}}</div></div>
</header>
<p class="headline">{{.Headline}}</p>
{{if or .Res.Verdict.Reasons .Res.Verdict.Notes}}<ul class="reasons">
{{range .Res.Verdict.Reasons}}<li class="reason">{{.}}</li>{{end}}
{{range .Res.Verdict.Notes}}<li class="note">{{.}}</li>{{end}}
</ul>{{end}}

<div class="cards">
{{range .Cards}}<div class="card {{.Class}}"><div class="label">{{.Label}}</div><div class="value">{{.Value}}</div><div class="note">{{.Sub}}</div></div>{{end}}
</div>

{{if .FindMaxChart}}
<h2>find-max: latency at each step</h2>
<div class="panel">
<p>Each dot is one step ({{.Res.FindMax.StepSeconds}}s measured); its colour is the step's verdict. Stopped because {{.Res.FindMax.StopReason}}.</p>
<div class="legend"><span class="l-p50">p50</span><span class="l-p99">p99</span><span class="l-max">max</span><span class="l-budget">budget</span></div>
{{.FindMaxChart}}
</div>
<h2>Steps</h2>
<table>
<tr><th>step</th><th>rate per key</th><th class="text">verdict</th><th>offered/s</th><th>achieved/s</th><th>errors</th><th>p50</th><th>p99</th><th>p99.9</th><th>max</th><th class="text">why</th></tr>
{{range $i, $s := .Res.FindMax.Steps}}<tr><td>{{inc $i}}</td><td>{{num $s.RatePerKey}}</td><td class="text">{{$s.Verdict}}</td><td>{{rate $s.OfferedRate}}</td><td>{{rate $s.AchievedRate}}</td>
<td>{{$s.Errors}}</td><td>{{ms $s.LatencyMs.P50}}</td><td>{{ms $s.LatencyMs.P99}}</td><td>{{ms $s.LatencyMs.P999}}</td><td>{{ms $s.LatencyMs.Max}}</td><td class="wrap">{{join $s.Reasons "; "}}</td></tr>{{end}}
</table>
<p class="sub">The charts and tables below are those of step {{inc .Res.FindMax.BestStep}}.</p>
{{end}}

{{if .LatencyChart}}
<h2>Latency over time</h2>
<div class="panel">
<p>Each second's requests by their intended send time, so a stall shows where it happened. Hover for the figures; shaded bands are seconds with errors.</p>
<div class="legend"><span class="l-p50">p50</span><span class="l-p99">p99</span><span class="l-max">max</span><span class="l-budget">budget</span><span class="l-errors">seconds with errors</span>{{if .Res.Hooks}}<span class="l-hook">hook</span>{{end}}</div>
{{.LatencyChart}}
</div>
<h2>Throughput</h2>
<div class="panel">
<p>Requests sent (offered) and successful answers received (achieved) in each second; errors as bars.</p>
<div class="legend"><span class="l-offered">offered</span><span class="l-achieved">achieved</span><span class="l-errors">errors</span>{{if .Res.Hooks}}<span class="l-hook">hook</span>{{end}}</div>
{{.ThroughputChart}}
</div>
{{if .LagChart}}<h2>Generator lag</h2>
<div class="panel">
<p>How late the bench sent each second's requests after their intended time. The lag is in every latency above: when it rises with them, the bench fell behind, not the proxy.</p>
<div class="legend"><span class="l-p99">p99</span><span class="l-max">max</span>{{if .Res.Hooks}}<span class="l-hook">hook</span>{{end}}</div>
{{.LagChart}}
</div>{{end}}
{{end}}

{{if .DistChart}}
<h2>Latency distribution</h2>
<div class="panel">
<p>The share of requests answered within a latency, on a scale where 90%, 99% and 99.9% are equally far apart.</p>
<div class="legend">{{range .Legend}}<span class="l-{{.Class}}">{{.Name}}</span>{{end}}<span class="l-budget">budget</span></div>
{{.DistChart}}
</div>
{{end}}

<h2>By operation</h2>
<table>
<tr><th>operation</th><th>requested/s</th><th>offered/s</th><th>achieved/s</th><th>ok</th><th>errors</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>
{{range .OpRows}}<tr><td>{{.Name}}</td><td>{{rate .RequestedRate}}</td><td>{{rate .OfferedRate}}</td><td>{{rate .AchievedRate}}</td><td>{{.OK}}</td><td>{{.Errors}}</td>
<td>{{ms .LatencyMs.P50}}</td><td>{{ms .LatencyMs.P90}}</td><td>{{ms .LatencyMs.P99}}</td><td>{{ms .LatencyMs.P999}}</td><td>{{ms .LatencyMs.Max}}</td></tr>{{end}}
</table>

<h2>By key</h2>
<table>
<tr><th>key</th><th class="text">key id</th><th>requested/s</th><th>offered/s</th><th>achieved/s</th><th>errors</th><th>p50</th><th>p99</th><th>max</th></tr>
{{range $k := .Res.Keys}}<tr><td>{{$k.Key}}</td><td class="text">{{$k.KeyID}}</td><td>{{rate $k.RequestedRate}}</td><td>{{rate $k.OfferedRate}}</td><td>{{rate $k.AchievedRate}}</td>
<td>{{$k.Errors}}</td><td>{{ms $k.LatencyMs.P50}}</td><td>{{ms $k.LatencyMs.P99}}</td><td>{{ms $k.LatencyMs.Max}}</td></tr>{{end}}
</table>

<h2>Errors</h2>
{{if .Res.Errors}}<table>
<tr><th>count</th><th class="text">operation</th><th class="text">kind</th><th>status</th><th class="text">name</th><th class="text">first message</th></tr>
{{range .Res.Errors}}<tr><td>{{.Count}}</td><td class="text">{{.Op}}</td><td class="text">{{.Kind}}</td><td>{{status .Status}}</td><td class="text">{{.Name}}</td><td class="wrap">{{.Sample}}</td></tr>{{end}}
</table>{{else}}<p>None.</p>{{end}}

{{if .Res.Hooks}}<h2>Scenario hooks</h2>
<table>
<tr><th>at</th><th class="text">command</th><th>started</th><th>ended</th><th>exit</th><th class="text">output</th></tr>
{{range .Res.Hooks}}<tr><td>{{.AtSeconds}}s</td><td class="wrap"><code>{{.Command}}</code></td><td>{{if .Ran}}{{printf "%.3f" .StartedSeconds}}s{{end}}</td><td>{{if .Ran}}{{printf "%.3f" .EndedSeconds}}s{{end}}</td>
<td>{{.ExitCode}}</td><td class="wrap">{{if .Error}}{{.Error}}{{end}}{{if .Output}}<pre>{{.Output}}</pre>{{end}}</td></tr>{{end}}
</table>{{end}}

<h2>Configuration</h2>
<dl>
<dt>target</dt><dd>{{join .Res.Target.Endpoints ", "}} · {{.Res.Target.URIPath}} · key store {{.Res.Target.KeyStore}} · region {{.Res.Target.Region}}</dd>
<dt>keys</dt><dd>{{.Res.Config.Keys}} logical key(s) using {{join .Res.Target.KeyIDs ", "}}{{if .Res.Config.KeysShareIDs}} (ids shared between logical keys){{end}}</dd>
<dt>load</dt><dd>{{num .Res.Config.RatePerKey}}/s per key, open loop · mix {{mix .Res.Config.Mix}} · {{.Res.Config.PlaintextBytes}} B plaintext · {{.Res.Config.AADBytes}} B AAD · CDIV {{onoff .Res.Config.CDIV}}</dd>
<dt>window</dt><dd>warm-up {{.Res.Measured.WarmupSeconds}}s (not counted) · measured {{.Res.Measured.DurationSeconds}}s · stopped by {{.Res.Measured.StoppedBy}}</dd>
<dt>client</dt><dd>{{.Res.Config.Connections}} connections per endpoint · {{.Res.Config.Spread}} · at most {{.Res.Config.MaxInFlight}} in flight · timeout {{.Res.Config.TimeoutSeconds}}s · {{.Res.Config.RingSize}} ciphertexts kept per key</dd>
<dt>budget</dt><dd>p99 ≤ {{ms .Res.Config.BudgetMs}} · error rate ≤ {{pct .Res.Config.MaxErrorRate}}</dd>
<dt>generator lag</dt><dd>p50 {{ms .Res.GeneratorLagMs.P50}} · p99 {{ms .Res.GeneratorLagMs.P99}} · max {{ms .Res.GeneratorLagMs.Max}} (how late requests left the bench; part of every latency)</dd>
<dt>host</dt><dd>{{.Res.Host.Hostname}} · {{.Res.Host.CPUs}} CPUs · {{.Res.Host.CPUModel}} · {{.Res.Host.GoVersion}} {{.Res.Host.OS}}/{{.Res.Host.Arch}}</dd>
</dl>

<footer>Open loop: every request has an intended send time on a fixed schedule, and its latency runs from that time to its answer,
so a proxy that stalls cannot hide behind a generator that waits for it. Requests that could not be sent because too many were
in flight count as client-saturated errors, still with their latency. Figures from HDR histograms (1 µs to 60 s, 3 significant digits).
Schema: result.json, schemaVersion {{.Res.SchemaVersion}}.</footer>
</main></body></html>
`
