// Command xksbench is the XKS proxy load generator: `run` offers a constant,
// open-loop load and judges it against a latency budget, `find-max` steps the
// rate up to the highest the proxy sustains, and `compare` sets two results
// side by side. Every run writes result.json, summary.txt, timeseries.csv and
// report.html; bench/README.md explains them.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/xksproxy/xksproxy/bench"
	"github.com/xksproxy/xksproxy/bench/report"
)

// exitCouldNotRun is the exit code when no load could be measured at all:
// bad flags, an unreachable proxy, a refused credential.
const exitCouldNotRun = 4

// exitError carries a verdict's exit code out of cobra; its message has
// already been printed.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func main() {
	os.Exit(execute(os.Args[1:]))
}

func execute(args []string) int {
	root := &cobra.Command{
		Use:           "xksbench",
		Short:         "Load generator for AWS KMS External Key Store (XKS) proxies: open loop, SigV4, HDR latencies, HTML reports",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(runCommand(), findMaxCommand(), compareCommand())
	root.SetArgs(args)
	err := root.Execute()
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	}
	fmt.Fprintln(os.Stderr, "xksbench:", err)
	if errors.Is(err, bench.ErrWrongAnswer) {
		return bench.ExitWrong
	}
	return exitCouldNotRun
}

func runCommand() *cobra.Command {
	o := newOptions()
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Offer a constant open-loop load for a fixed time and judge it against the latency budget",
		Example: `  xksbench run --client .xksproxy-dev/client.json --rate 1800 --duration 60s
  xksbench run --client .xks3/client.json --keys 3 --rate 1800 --at 10s='kill -9 $(cat .xks3/node1/pid)'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.config()
			if err != nil {
				return err
			}
			return runAndReport(cfg, o, func(ctx context.Context, r *bench.Runner) (*bench.Result, error) { return r.Run(ctx) })
		},
	}
	o.bind(cmd, true)
	return cmd
}

func findMaxCommand() *cobra.Command {
	o := newOptions()
	o.warmup = 2 * time.Second
	fm := bench.DefaultFindMax()
	cmd := &cobra.Command{
		Use:   "find-max",
		Short: "Step the per-key rate up until p99 exceeds the budget or errors exceed --max-error-rate; report the highest sustainable rate",
		Example: `  xksbench find-max --client .xksproxy-dev/client.json --start-rate 500 --factor 1.5 --step-duration 10s
  xksbench find-max --client .xksproxy-dev/client.json --budget 10ms --start-rate 1000 --step 1000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.config()
			if err != nil {
				return err
			}
			if err := fm.Validate(); err != nil {
				return err
			}
			cfg.Duration = fm.StepDuration
			return runAndReport(cfg, o, func(ctx context.Context, r *bench.Runner) (*bench.Result, error) { return r.FindMax(ctx, fm) })
		},
	}
	o.bind(cmd, false)
	f := cmd.Flags()
	f.Float64Var(&fm.StartRate, "start-rate", fm.StartRate, "per-key rate of the first step (requests/s)")
	f.Float64Var(&fm.Factor, "factor", fm.Factor, "multiply the rate by this after each passing step")
	f.Float64Var(&fm.Step, "step", 0, "add this to the rate after each passing step instead of multiplying")
	f.Float64Var(&fm.MaxRate, "max-rate", fm.MaxRate, "never go above this per-key rate")
	f.DurationVar(&fm.StepDuration, "step-duration", fm.StepDuration, "measured time of each step (each is preceded by --warmup)")
	f.IntVar(&fm.MaxSteps, "max-steps", fm.MaxSteps, "at most this many steps, refinements included")
	f.IntVar(&fm.Refine, "refine", fm.Refine, "bisections between the last passing and the first failing rate")
	return cmd
}

// runAndReport runs the load, writes every output, prints the summary and
// turns the verdict into the exit code.
func runAndReport(cfg bench.Config, o *options, measure func(context.Context, *bench.Runner) (*bench.Result, error)) error {
	out := o.out
	if out == "" {
		out = filepath.Join("bench", "results", time.Now().Format("20060102-150405"))
	}
	r, err := bench.NewRunner(cfg)
	if err != nil {
		return err
	}
	defer r.Close()
	if o.cpuProfile != "" {
		stopProfile, err := startCPUProfile(o.cpuProfile)
		if err != nil {
			return err
		}
		defer stopProfile()
	}
	// The first Ctrl-C ends the run early (reports are still written, the
	// verdict INVALID); the next one kills the bench as usual.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
	}()
	res, err := measure(ctx, r)
	if err != nil {
		return err
	}
	if err := report.WriteAll(out, res); err != nil {
		return fmt.Errorf("writing the reports: %w", err)
	}
	fmt.Println()
	if err := report.Summary(os.Stdout, res); err != nil {
		return err
	}
	fmt.Printf("\nreports in %s (open %s)\n", out, filepath.Join(out, "report.html"))
	if res.Verdict.ExitCode != 0 {
		return exitError{res.Verdict.ExitCode}
	}
	return nil
}

// startCPUProfile profiles the bench process into path until the returned
// function is called.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "xksbench: writing the CPU profile:", err)
		}
	}, nil
}

func compareCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "compare A.json B.json",
		Short: "Show two results side by side with the change from A to B (a results directory names its result.json)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var results [2]*bench.Result
			for i, path := range args {
				if st, err := os.Stat(path); err == nil && st.IsDir() {
					path = filepath.Join(path, "result.json")
				}
				res, err := bench.ReadResult(path)
				if err != nil {
					return err
				}
				results[i] = res
			}
			return report.Compare(cmd.OutOrStdout(), args[0], results[0], args[1], results[1])
		},
	}
}
