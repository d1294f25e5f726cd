package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/xksproxy/xksproxy/cmd/xksproxy/internal/node"
	"github.com/xksproxy/xksproxy/hsm"
)

// probeLevels are the concurrencies `hsm probe` measures.
var probeLevels = []int{1, 2, 4, 8, 16, 32, 64}

func hsmCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "hsm", Short: "Measure the configured HSMs"}
	var configPath string
	var rate float64
	var per time.Duration
	probe := &cobra.Command{
		Use:   "probe",
		Short: "Measure each configured HSM's latency and throughput against concurrent sessions, and recommend pool_size (run with the node stopped, or on a quiet HSM)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := node.LoadConfig(configPath)
			if err != nil {
				return err
			}
			for _, h := range cfg.HSMs() {
				h.PoolSize = probeLevels[len(probeLevels)-1]
			}
			g, err := node.OpenHSM(cfg)
			if err != nil {
				return err
			}
			defer g.Close()
			for _, m := range g.Members() {
				if err := probeHSM(cmd.OutOrStdout(), m, rate, per); err != nil {
					return err
				}
			}
			return nil
		},
	}
	probe.Flags().StringVar(&configPath, "config", "/etc/xksproxy/node.toml", "the node's TOML configuration file")
	probe.Flags().Float64Var(&rate, "rate", 1800, "encrypts per second the pool must sustain (AWS KMS's default quota per key store is 1800)")
	probe.Flags().DurationVar(&per, "duration", 2*time.Second, "how long each concurrency is measured")
	cmd.AddCommand(probe)
	return cmd
}

// probeHSM measures one HSM on a key of its own, created for the probe and
// destroyed after it, and prints the figures and the recommendation.
func probeHSM(w io.Writer, h *hsm.HSM, rate float64, per time.Duration) error {
	var suffix [6]byte
	rand.Read(suffix[:])
	label := "xksproxy-probe-" + hex.EncodeToString(suffix[:])
	if err := h.GenerateKey(label); err != nil {
		return fmt.Errorf("token %q: creating the probe key: %w", h.TokenLabel(), err)
	}
	points := h.Probe(label, probeLevels, per)
	destroyErr := h.DestroyKey(label)
	fmt.Fprintf(w, "token %q (%d × %v per concurrency, 32-byte encrypts with 64 bytes of AAD on key %s):\n",
		h.TokenLabel(), len(points), per, label)
	fmt.Fprintf(w, "  %-8s %12s %12s %8s\n", "sessions", "encrypts/s", "call time", "errors")
	for _, p := range points {
		fmt.Fprintf(w, "  %-8d %12.0f %12v %8d\n", p.Concurrency, p.Rate, p.CallTime.Round(time.Microsecond), p.Errors)
	}
	s := hsm.Recommend(points, rate)
	if s.Reachable {
		fmt.Fprintf(w, "  pool_size = %d: %.0f/s × %v per call (one caller) × %.1f headroom = %.1f sessions busy (Little's law), at least 2\n",
			s.PoolSize, s.Target, s.CallTime.Round(time.Microsecond), s.Headroom, s.Target*s.CallTime.Seconds()*s.Headroom)
	} else {
		fmt.Fprintf(w, "  %.0f/s × %.1f headroom is beyond this HSM: its best was %.0f/s with %d sessions; pool_size = %d (more sessions would not help)\n",
			s.Target, s.Headroom, s.Best.Rate, s.Best.Concurrency, s.PoolSize)
	}
	if destroyErr != nil {
		return fmt.Errorf("token %q: destroying the probe key %s: %w (remove it by hand)", h.TokenLabel(), label, destroyErr)
	}
	return nil
}
