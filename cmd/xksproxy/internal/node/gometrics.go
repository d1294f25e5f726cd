package node

import (
	"strings"
	"sync"

	metrics "github.com/hashicorp/go-metrics/compat"
	"github.com/prometheus/client_golang/prometheus"
)

// raftMetrics bridges what hashicorp/raft and memberlist emit through
// go-metrics into the node's Prometheus registry. Only the keys listed in
// bridged are kept, under names and units of our own: go-metrics keys are
// camelCase, timings are in milliseconds, counters lack _total, and some
// keys embed a peer's id, so a blind export would fail Prometheus's naming
// rules and let series multiply.
type raftMetrics struct {
	mu       sync.Mutex
	counters map[string]float64 // by bridged name
	gauges   map[string]float64
	samples  map[string]*summary
}

type summary struct{ sum, count float64 }

type bridgedKind uint8

const (
	counterMetric bridgedKind = iota
	gaugeMetric
	millisecondsMetric // a go-metrics timing in milliseconds, exported in seconds
)

type bridged struct {
	name string
	kind bridgedKind
	desc *prometheus.Desc
}

func newBridged(name string, kind bridgedKind, help string) bridged {
	return bridged{name: name, kind: kind, desc: prometheus.NewDesc(name, help, nil, nil)}
}

// bridgedKeys are the go-metrics keys kept, by their dotted key.
var bridgedKeys = map[string]bridged{
	"raft.commitTime":                   newBridged("xksproxy_raft_commit_seconds", millisecondsMetric, "Raft (on the leader): time from dispatching an entry to its commit by a majority."),
	"raft.leader.dispatchLog":           newBridged("xksproxy_raft_leader_dispatch_log_seconds", millisecondsMetric, "Raft (on the leader): time to write entries to its own log."),
	"raft.leader.lastContact":           newBridged("xksproxy_raft_leader_last_contact_seconds", millisecondsMetric, "Raft (on the leader): time since it last heard from each follower, sampled."),
	"raft.fsm.apply":                    newBridged("xksproxy_raft_fsm_apply_seconds", millisecondsMetric, "Raft: time to apply one committed entry to the state machine."),
	"raft.rpc.appendEntries":            newBridged("xksproxy_raft_append_entries_rpc_seconds", millisecondsMetric, "Raft (on a follower): time to handle an AppendEntries RPC."),
	"raft.snapshot.persist":             newBridged("xksproxy_raft_snapshot_persist_seconds", millisecondsMetric, "Raft: time to write a snapshot to disk."),
	"raft.apply":                        newBridged("xksproxy_raft_applies_total", counterMetric, "Raft (on the leader): commands submitted."),
	"raft.state.candidate":              newBridged("xksproxy_raft_elections_started_total", counterMetric, "Raft: times this node became a candidate (started an election)."),
	"raft.state.leader":                 newBridged("xksproxy_raft_leaderships_total", counterMetric, "Raft: times this node became the leader."),
	"raft.transition.heartbeat_timeout": newBridged("xksproxy_raft_heartbeat_timeouts_total", counterMetric, "Raft: times this node, as a follower, heard no heartbeat in time."),
	"memberlist.gossip":                 newBridged("xksproxy_gossip_round_seconds", millisecondsMetric, "Gossip (memberlist): time of one gossip round."),
	"memberlist.probeNode":              newBridged("xksproxy_gossip_probe_seconds", millisecondsMetric, "Gossip (memberlist): time to probe one member."),
	"memberlist.health.score":           newBridged("xksproxy_gossip_health_score", gaugeMetric, "Gossip (memberlist): this node's awareness score, 0 when healthy; higher means it is slow to answer probes."),
	"memberlist.msg.suspect":            newBridged("xksproxy_gossip_suspect_messages_total", counterMetric, "Gossip (memberlist): suspect messages about members."),
	"memberlist.msg.dead":               newBridged("xksproxy_gossip_dead_messages_total", counterMetric, "Gossip (memberlist): dead messages about members."),
	"memberlist.degraded.probe":         newBridged("xksproxy_gossip_degraded_probes_total", counterMetric, "Gossip (memberlist): probes that needed indirect or TCP fallback."),
}

var (
	raftMetricsOnce sync.Once
	processRaftSink *raftMetrics
)

// bridgeRaftMetrics installs the bridge as go-metrics' global sink, once
// per process (go-metrics has one), and returns it for the registry.
func bridgeRaftMetrics() *raftMetrics {
	raftMetricsOnce.Do(func() {
		processRaftSink = &raftMetrics{counters: map[string]float64{}, gauges: map[string]float64{}, samples: map[string]*summary{}}
		cfg := metrics.DefaultConfig("")
		cfg.EnableHostname = false
		cfg.EnableHostnameLabel = false
		cfg.EnableRuntimeMetrics = false
		cfg.EnableServiceLabel = false
		metrics.NewGlobal(cfg, processRaftSink)
	})
	return processRaftSink
}

func (r *raftMetrics) record(key []string, val float32, kind bridgedKind) {
	b, ok := bridgedKeys[strings.Join(key, ".")]
	if !ok || b.kind != kind {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch kind {
	case counterMetric:
		r.counters[b.name] += float64(val)
	case gaugeMetric:
		r.gauges[b.name] = float64(val)
	case millisecondsMetric:
		s := r.samples[b.name]
		if s == nil {
			s = &summary{}
			r.samples[b.name] = s
		}
		s.sum += float64(val) / 1000
		s.count++
	}
}

func (r *raftMetrics) SetGauge(key []string, val float32) { r.record(key, val, gaugeMetric) }
func (r *raftMetrics) SetGaugeWithLabels(key []string, val float32, _ []metrics.Label) {
	r.record(key, val, gaugeMetric)
}
func (r *raftMetrics) EmitKey([]string, float32)             {}
func (r *raftMetrics) IncrCounter(key []string, val float32) { r.record(key, val, counterMetric) }
func (r *raftMetrics) IncrCounterWithLabels(key []string, val float32, _ []metrics.Label) {
	r.record(key, val, counterMetric)
}
func (r *raftMetrics) AddSample(key []string, val float32) { r.record(key, val, millisecondsMetric) }
func (r *raftMetrics) AddSampleWithLabels(key []string, val float32, _ []metrics.Label) {
	r.record(key, val, millisecondsMetric)
}

// Collect exports every bridged metric, at zero until first emitted, so
// that dashboards and alerts find them from the start.
func (r *raftMetrics) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range bridgedKeys {
		switch b.kind {
		case counterMetric:
			ch <- prometheus.MustNewConstMetric(b.desc, prometheus.CounterValue, r.counters[b.name])
		case gaugeMetric:
			ch <- prometheus.MustNewConstMetric(b.desc, prometheus.GaugeValue, r.gauges[b.name])
		case millisecondsMetric:
			s := r.samples[b.name]
			if s == nil {
				s = &summary{}
			}
			ch <- prometheus.MustNewConstSummary(b.desc, uint64(s.count), s.sum, nil)
		}
	}
}
