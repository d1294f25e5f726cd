package node

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/xksproxy/xksproxy/admin/server"
	"github.com/xksproxy/xksproxy/cluster"
	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/hsm"
	"github.com/xksproxy/xksproxy/internal/buildinfo"
)

// newRegistry holds the node's metrics besides the data plane's own (which
// xksapi adds): the Go runtime, the process, the HSM pool and the cluster.
// All of them are read at scrape time from counters the packages keep
// anyway, so they cost the request path nothing.
func newRegistry(h *hsm.Group, c *cluster.Node, a *server.Server) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) { collectHSM(ch, h) }),
		prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) { collectCluster(ch, c) }),
		prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) { collectAdmin(ch, a) }),
	)
	return reg
}

// Every HSM series carries the label hsm, the HSM's token label (hsm.token_label
// of its [hsm] or [[hsm]] entry), so that a node with several HSMs shows which
// one is slow or out; GetHealthStatus names the same HSM NODE_ID/TOKEN_LABEL.
var hsmLabel = []string{"hsm"}

var (
	hsmSessions = prometheus.NewDesc("xksproxy_hsm_sessions",
		"PKCS#11 sessions in the HSM's pool (hsm.pool_size).", hsmLabel, nil)
	hsmSessionsInUse = prometheus.NewDesc("xksproxy_hsm_sessions_in_use",
		"Pool sessions running an HSM call or held by recovery.", hsmLabel, nil)
	hsmWaiting = prometheus.NewDesc("xksproxy_hsm_waiting_callers",
		"Callers queued for a free session of the HSM.", hsmLabel, nil)
	hsmExpectedWait = prometheus.NewDesc("xksproxy_hsm_expected_wait_seconds",
		"Expected wait for a session of a caller arriving now; beyond hsm.wait_timeout callers get 429 at once.", hsmLabel, nil)
	hsmCallAverage = prometheus.NewDesc("xksproxy_hsm_call_average_seconds",
		"Moving average of one HSM call, the basis of the expected wait.", hsmLabel, nil)
	hsmStuck = prometheus.NewDesc("xksproxy_hsm_stuck_calls",
		"HSM calls that outlived hsm.call_timeout and are still running.", hsmLabel, nil)
	hsmTimeouts = prometheus.NewDesc("xksproxy_hsm_call_timeouts_total",
		"HSM calls that outlived hsm.call_timeout (their callers got 503, or a retry on another HSM).", hsmLabel, nil)
	hsmStatus = prometheus.NewDesc("xksproxy_hsm_status",
		"The HSM's health as GetHealthStatus reports it: 1 for the current status, 0 for the others.", []string{"hsm", "status"}, nil)
	hsmInRotation = prometheus.NewDesc("xksproxy_hsm_in_rotation",
		"1 while the HSM takes new calls; 0 while it is down or has a call stuck past hsm.call_timeout (its monitor probes it until it recovers).", hsmLabel, nil)
	hsmServed = prometheus.NewDesc("xksproxy_hsm_served_total",
		"Operations the HSM answered successfully (encrypt, decrypt, seal, unseal, key generation), wherever the node routed them.", hsmLabel, nil)

	clusterLeader = prometheus.NewDesc("xksproxy_cluster_is_leader",
		"1 when this node is the Raft leader.", nil, nil)
	clusterLeaderKnown = prometheus.NewDesc("xksproxy_cluster_leader_known",
		"1 when this node knows a leader (0 during an election).", nil, nil)
	clusterApplied = prometheus.NewDesc("xksproxy_cluster_applied_index",
		"Raft index of the last command this node's state machine applied.", nil, nil)
	clusterContactAge = prometheus.NewDesc("xksproxy_cluster_leader_contact_age_seconds",
		"Time since this node last heard from the leader (0 on the leader); past cluster.staleness_limit it refuses crypto.", nil, nil)
	clusterStateAge = prometheus.NewDesc("xksproxy_cluster_state_age_seconds",
		"How long ago this node's state last held everything the leader had applied (-1 before it first did); past cluster.staleness_limit it refuses crypto.", nil, nil)
	clusterFleet = prometheus.NewDesc("xksproxy_cluster_fleet_members",
		"Live members of the gossip fleet, this node included (1 without gossip).", nil, nil)
	buildInfo = prometheus.NewDesc("xksproxy_build_info",
		"Always 1: this node's release version, commit, Go toolchain, and the newest command set its build reads.",
		[]string{"version", "commit", "goversion", "command_set"}, nil)
	clusterCommandSet = prometheus.NewDesc("xksproxy_cluster_command_set",
		"The cluster's command set in effect: raised by the leader once every voter's build reads it.", nil, nil)
)

func collectHSM(ch chan<- prometheus.Metric, g *hsm.Group) {
	for i, m := range g.Members() {
		name := m.TokenLabel()
		st := m.Stats()
		gauge(ch, hsmSessions, float64(st.PoolSize), name)
		gauge(ch, hsmSessionsInUse, float64(st.InUse), name)
		gauge(ch, hsmWaiting, float64(st.Waiting), name)
		gauge(ch, hsmExpectedWait, st.ExpectedWait.Seconds(), name)
		gauge(ch, hsmCallAverage, st.CallAverage.Seconds(), name)
		gauge(ch, hsmStuck, float64(st.Stuck), name)
		gauge(ch, hsmInRotation, flag(m.InRotation()), name)
		ch <- prometheus.MustNewConstMetric(hsmTimeouts, prometheus.CounterValue, float64(st.Timeouts), name)
		ch <- prometheus.MustNewConstMetric(hsmServed, prometheus.CounterValue, float64(g.Served(i)), name)
		current := m.Health().Status
		for _, s := range []hsm.Status{hsm.StatusActive, hsm.StatusDegraded, hsm.StatusUnavailable} {
			gauge(ch, hsmStatus, flag(s == current), name, s.String())
		}
	}
}

var adminRefused = prometheus.NewDesc("xksproxy_admin_refused_total",
	"Admin API calls refused, by reason: unauthenticated (no, a wrong or a revoked token; a certificate naming no operator), role (the operator's role does not allow it), rule (the change was refused). Each is also an audit log line.",
	[]string{"reason"}, nil)

func collectAdmin(ch chan<- prometheus.Metric, a *server.Server) {
	for i, n := range a.Refusals() {
		ch <- prometheus.MustNewConstMetric(adminRefused, prometheus.CounterValue, float64(n), server.RefusalReasons[i])
	}
}

func collectCluster(ch chan<- prometheus.Metric, c *cluster.Node) {
	fleet, _ := c.Fleet()
	gauge(ch, clusterLeader, flag(c.IsLeader()))
	gauge(ch, clusterLeaderKnown, flag(c.LeaderID() != ""))
	gauge(ch, clusterApplied, float64(c.AppliedIndex()))
	gauge(ch, clusterCommandSet, float64(c.CommandSetInEffect()))
	build := buildinfo.Read()
	ch <- prometheus.MustNewConstMetric(buildInfo, prometheus.GaugeValue, 1, build.Version, build.ShortCommit(), build.GoVersion, strconv.Itoa(fsm.CommandSet))
	gauge(ch, clusterContactAge, c.LeaderContactAge().Seconds())
	stateAge := -1.0
	if age, ok := c.StateAge(); ok {
		stateAge = age.Seconds()
	}
	gauge(ch, clusterStateAge, stateAge)
	gauge(ch, clusterFleet, float64(fleet))
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func flag(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
