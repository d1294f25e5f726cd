package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// SchemaVersion is the version of the result.json schema. Fields are only
// ever added within a version; a removal or a change of meaning bumps it.
// bench/README.md documents every field.
const SchemaVersion = 1

// The verdicts of a run.
const (
	VerdictPass    = "PASS"
	VerdictFail    = "FAIL"
	VerdictInvalid = "INVALID"
)

// Exit codes of xksbench, also recorded in the verdict.
const (
	ExitPass    = 0
	ExitFail    = 1 // over the latency budget or the error rate
	ExitInvalid = 2 // the generator could not offer the requested load, or the run was interrupted
	ExitWrong   = 3 // the proxy answered wrongly (plaintext that does not round-trip, bad CDIV)
)

// Result is everything one run (or one find-max search) measured: what
// result.json holds and every report is drawn from.
type Result struct {
	SchemaVersion int        `json:"schemaVersion"`
	Tool          string     `json:"tool"`
	Kind          string     `json:"kind"` // "run" or "find-max"
	StartedAt     time.Time  `json:"startedAt"`
	FinishedAt    time.Time  `json:"finishedAt"`
	Host          HostInfo   `json:"host"`
	Target        TargetInfo `json:"target"`
	Config        ConfigInfo `json:"config"`
	Verdict       Verdict    `json:"verdict"`
	Measured      Measured   `json:"measured"`
	// Totals covers every measured request; Operations and Keys split it.
	Totals     Stats            `json:"totals"`
	Operations map[string]Stats `json:"operations"`
	Keys       []KeyStats       `json:"keys"`
	Errors     []ErrorCount     `json:"errors"`
	// GeneratorLagMs is how late the bench sent requests after their
	// intended time: its own health, included in every latency.
	GeneratorLagMs LatencySummary `json:"generatorLagMs"`
	Timeseries     []SecondRow    `json:"timeseries"`
	Hooks          []HookRecord   `json:"hooks"`
	FindMax        *FindMaxResult `json:"findMax,omitempty"`
}

// HostInfo describes the machine the bench ran on.
type HostInfo struct {
	Hostname   string `json:"hostname"`
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	CPUs       int    `json:"cpus"`
	CPUModel   string `json:"cpuModel"`
	GoVersion  string `json:"goVersion"`
	GOMAXPROCS int    `json:"gomaxprocs"`
}

// TargetInfo is the target without its credential.
type TargetInfo struct {
	Endpoints []string `json:"endpoints"`
	URIPath   string   `json:"uriPath"`
	KeyStore  string   `json:"keyStore"`
	Region    string   `json:"region"`
	KeyIDs    []string `json:"keyIds"`
}

// ConfigInfo is the load as configured.
type ConfigInfo struct {
	RatePerKey      float64        `json:"ratePerKey"`
	Keys            int            `json:"keys"`
	KeyIDs          []string       `json:"keyIds"`       // the external key id of each logical key
	KeysShareIDs    bool           `json:"keysShareIds"` // more logical keys than distinct key ids
	Mix             map[string]int `json:"mix"`
	PlaintextBytes  int            `json:"plaintextBytes"`
	AADBytes        int            `json:"aadBytes"`
	CDIV            bool           `json:"cdiv"`
	WarmupSeconds   float64        `json:"warmupSeconds"`
	DurationSeconds float64        `json:"durationSeconds"`
	MaxRequests     int64          `json:"maxRequests"`
	Connections     int            `json:"connections"` // per endpoint
	Preconnect      bool           `json:"preconnect"`  // all opened before the run
	Spread          string         `json:"spread"`
	MaxInFlight     int            `json:"maxInFlight"`
	TimeoutSeconds  float64        `json:"timeoutSeconds"`
	BudgetMs        float64        `json:"budgetMs"`
	MaxErrorRate    float64        `json:"maxErrorRate"`
	RingSize        int            `json:"ringSize"`
	Hooks           []HookSpec     `json:"hooks"`
}

// HookSpec is a configured scenario hook.
type HookSpec struct {
	AtSeconds float64 `json:"atSeconds"`
	Command   string  `json:"command"`
}

// Verdict judges a run against its budget.
type Verdict struct {
	Result   string   `json:"result"` // PASS, FAIL or INVALID
	ExitCode int      `json:"exitCode"`
	Reasons  []string `json:"reasons"` // why it is not PASS; empty when it is
	Notes    []string `json:"notes"`   // things a reader should know that do not change the verdict
}

// Measured says what the measured window turned out to be.
type Measured struct {
	WarmupSeconds   float64 `json:"warmupSeconds"`
	DurationSeconds float64 `json:"durationSeconds"`
	// StoppedBy is "duration", "max-requests" (the cap shortened the run)
	// or "interrupted".
	StoppedBy string `json:"stoppedBy"`
}

// Stats are the figures of a set of measured requests: all of them, one
// operation's or one key's. Rates are per second of the measured window.
type Stats struct {
	// Requested is how many requests the schedule held; Offered how many the
	// bench sent; OK how many succeeded; Errors how many failed, including
	// ClientSaturated ones that were never sent.
	Requested       int64   `json:"requested"`
	Offered         int64   `json:"offered"`
	OK              int64   `json:"ok"`
	Errors          int64   `json:"errors"`
	ClientSaturated int64   `json:"clientSaturated"`
	RequestedRate   float64 `json:"requestedRate"`
	OfferedRate     float64 `json:"offeredRate"`
	AchievedRate    float64 `json:"achievedRate"` // successful answers per second
	ErrorRate       float64 `json:"errorRate"`    // Errors / (OK + Errors)
	// LatencyMs is measured from each request's intended send time to its
	// answer (or failure), over every outcome.
	LatencyMs       LatencySummary `json:"latencyMs"`
	PercentileCurve []CurvePoint   `json:"percentileCurve,omitempty"`
	// HDR is the full histogram (microseconds), HdrHistogram V2 compressed,
	// base64.
	HDR string `json:"hdr,omitempty"`
}

// KeyStats are one logical key's figures.
type KeyStats struct {
	Key   string `json:"key"`   // logical key name, e.g. "demo-key#2"
	KeyID string `json:"keyId"` // external key id it uses
	Stats
}

// LatencySummary holds percentiles in milliseconds.
type LatencySummary struct {
	Count   int64   `json:"count"`
	Min     float64 `json:"min"`
	Mean    float64 `json:"mean"`
	P50     float64 `json:"p50"`
	P90     float64 `json:"p90"`
	P99     float64 `json:"p99"`
	P999    float64 `json:"p99_9"`
	Max     float64 `json:"max"`
	Clipped int64   `json:"clipped,omitempty"` // values above 60 s, counted as 60 s
}

// CurvePoint is one point of a percentile distribution.
type CurvePoint struct {
	Percentile float64 `json:"percentile"`
	Ms         float64 `json:"ms"`
}

// ErrorCount is how often one kind of failure happened to one operation.
type ErrorCount struct {
	Op string `json:"op"`
	// Kind is "http" (the proxy answered non-200), "transport" (no answer:
	// timeout, refused, reset ...) or "client" (the bench refused the
	// answer, or could not send).
	Kind   string `json:"kind"`
	Status int    `json:"status,omitempty"` // HTTP status, for kind http
	// Name is the XKS errorName for kind http, else a short class such as
	// "timeout", "connection-refused", "client-saturated", "wrong-plaintext".
	Name   string `json:"name"`
	Count  int64  `json:"count"`
	Sample string `json:"sample,omitempty"` // the first message seen (never plaintext or secrets)
}

// SecondRow is one second of one operation (or "all") in the time series.
// Second counts from the start of the measured window. Offered counts
// requests sent in that second; Achieved successful answers and Errors
// failures received in it; the latency figures cover the requests that
// were due in that second, whenever they finished, so that a stall shows
// where it happened.
type SecondRow struct {
	Second   int     `json:"second"`
	Op       string  `json:"op"`
	Offered  int64   `json:"offered"`
	Achieved int64   `json:"achieved"`
	Errors   int64   `json:"errors"`
	Count    int64   `json:"count"` // requests due in that second with a latency
	P50Ms    float64 `json:"p50Ms"`
	P99Ms    float64 `json:"p99Ms"`
	MaxMs    float64 `json:"maxMs"`
	// LagP99Ms and LagMaxMs are how late the bench sent the requests due
	// in that second (the generator's own health); on "all" rows only.
	LagP99Ms float64 `json:"lagP99Ms,omitempty"`
	LagMaxMs float64 `json:"lagMaxMs,omitempty"`
}

// HookRecord is what a scenario hook did.
type HookRecord struct {
	AtSeconds      float64 `json:"atSeconds"`
	Command        string  `json:"command"`
	Ran            bool    `json:"ran"`
	StartedSeconds float64 `json:"startedSeconds"` // from the start of the measured window
	EndedSeconds   float64 `json:"endedSeconds"`
	ExitCode       int     `json:"exitCode"` // -1 when it could not start or was killed
	Error          string  `json:"error,omitempty"`
	Output         string  `json:"output,omitempty"` // the end of its combined output
}

// FindMaxResult is the search of a find-max run.
type FindMaxResult struct {
	StartRate          float64 `json:"startRate"`
	Factor             float64 `json:"factor,omitempty"`
	Step               float64 `json:"step,omitempty"`
	StepSeconds        float64 `json:"stepSeconds"`
	MaxRate            float64 `json:"maxRate"`
	Refine             int     `json:"refine"`
	MaxSustainableRate float64 `json:"maxSustainableRatePerKey"` // 0 when no step passed
	StopReason         string  `json:"stopReason"`
	// BestStep is the index in Steps of the step the top-level figures
	// describe (the highest passing one, else the first), or -1.
	BestStep int        `json:"bestStep"`
	Steps    []StepInfo `json:"steps"`
}

// StepInfo is one find-max step.
type StepInfo struct {
	RatePerKey   float64  `json:"ratePerKey"`
	Verdict      string   `json:"verdict"`
	Reasons      []string `json:"reasons"`
	OfferedRate  float64  `json:"offeredRate"`
	AchievedRate float64  `json:"achievedRate"`
	Errors       int64    `json:"errors"`
	ErrorRate    float64  `json:"errorRate"`
	// ErrorKinds says which failures a failing step met: a 429 of the CPU
	// shedder and one of the HSM pool fail a step alike, and mean different
	// things.
	ErrorKinds []ErrorCount   `json:"errorKinds,omitempty"`
	LatencyMs  LatencySummary `json:"latencyMs"`
}

// WriteJSON writes r as indented JSON to path.
func (r *Result) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ReadResult reads a result.json, refusing schema versions it does not know.
func ReadResult(path string) (*Result, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.SchemaVersion != SchemaVersion {
		return nil, fmt.Errorf("%s: schemaVersion %d, this xksbench reads %d", path, r.SchemaVersion, SchemaVersion)
	}
	return &r, nil
}
