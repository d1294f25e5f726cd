// Command xksproxy is the XKS proxy: `serve` runs a node from its TOML file,
// `dev` runs a ready-made development cluster on SoftHSMv2, and the other
// commands are the operator CLI over a node's admin API.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/xksproxy/xksproxy/cmd/xksproxy/internal/devenv"
	"github.com/xksproxy/xksproxy/cmd/xksproxy/internal/node"
	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/internal/buildinfo"
)

func main() {
	root := &cobra.Command{
		Use:           "xksproxy",
		Short:         "An AWS KMS External Key Store (XKS) proxy cluster backed by PKCS#11 HSMs",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.Version = buildinfo.Read().Version
	root.SetVersionTemplate(versionText())
	root.AddCommand(serveCommand(), devCommand(), clusterKeysCommand(), hsmCommand(), versionCommand())
	root.AddCommand(cliCommands()...)
	root.AddCommand(migrateCommand(), doctorCommand())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "xksproxy:", err)
		os.Exit(exitStatus(err))
	}
}

func versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, build date and Go toolchain of this binary",
		Args:  cobra.NoArgs,
		Run:   func(*cobra.Command, []string) { fmt.Print(versionText()) },
	}
}

// versionText is what `version` and `--version` print: the release on the
// first line, then one "name: value" line each, for scripts to grep.
func versionText() string {
	b := buildinfo.Read()
	commit, date := b.Commit, b.Date
	if commit == "" {
		commit = "unknown (built without version control information)"
	} else if b.Modified {
		commit += " (modified)"
	}
	if date == "" {
		date = "unknown"
	}
	return fmt.Sprintf("xksproxy %s\ncommit: %s\nbuilt: %s\ngo: %s\ncommand set: %d\n", b.Version, commit, date, b.GoVersion, fsm.CommandSet)
}

func serveCommand() *cobra.Command {
	var configPath string
	var check bool
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a proxy node from its TOML configuration",
		Long: `serve runs a node until SIGINT or SIGTERM, then drains it (api.drain_time).
SIGHUP reloads, without dropping a connection, the XKS listener's certificate,
key and mTLS client CA, the admin listener's (cluster) certificate, and
log.level; a file that fails to load is refused with a log line and the
current one stays. --check runs every check serve makes before it starts
(the configuration, the TLS files, the admin token, the bootstrap secrets,
the data directory, an HSM login) and exits: 0 when all pass, 1 otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := node.LoadConfig(configPath)
			if check {
				return checkConfig(configPath, cfg, err)
			}
			if err != nil {
				return err
			}
			return serve(configPath, cfg)
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "/etc/xksproxy/node.toml", "the node's TOML configuration file")
	cmd.Flags().BoolVar(&check, "check", false, "check the configuration, its files and the HSM login, then exit without serving")
	return cmd
}

// checkConfig prints one line per check of `serve --check`.
func checkConfig(path string, cfg *node.Config, loadErr error) error {
	if loadErr != nil {
		fmt.Printf("FAIL  configuration: %v\n", loadErr)
		return fmt.Errorf("%s: the configuration is not valid", path)
	}
	fmt.Printf("ok    configuration: %s\n", path)
	failed := 0
	for _, r := range node.Check(cfg) {
		switch {
		case r.Err != nil:
			failed++
			fmt.Printf("FAIL  %s: %v\n", r.Name, r.Err)
		case r.Detail != "":
			fmt.Printf("ok    %s: %s\n", r.Name, r.Detail)
		default:
			fmt.Printf("ok    %s\n", r.Name)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%s: %d check(s) failed; serve would not start", path, failed)
	}
	fmt.Println("the configuration is ready to serve")
	return nil
}

// serve runs a node until SIGINT or SIGTERM, then drains it; SIGHUP
// reloads what can change without a restart (node.Reload).
func serve(configPath string, cfg *node.Config) error {
	// Before anything else: SIGHUP's default action ends the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	log, logs, err := node.NewLogger(cfg.Log, os.Stderr)
	if err != nil {
		return err
	}
	defer logs.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := node.Start(cfg, log)
	if err != nil {
		return err
	}
	for running := true; running; {
		select {
		case <-hup:
			n.Reload(configPath) // logs what it reloaded and what it refused
		case <-ctx.Done():
			drain(n, cfg.API.DrainTime, log)
			log.Info().Msg("shutting down")
			running = false
		case err = <-n.Err():
			log.Error().Err(err).Msg("listener failed")
			running = false
		}
	}
	if cerr := n.Close(); err == nil {
		err = cerr
	}
	return err
}

// drain keeps the node serving for d with /ready failing, so that a load
// balancer takes it out of rotation before its listeners close; a second
// SIGINT or SIGTERM cuts it short.
func drain(n *node.Node, d time.Duration, log zerolog.Logger) {
	if d <= 0 {
		return
	}
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
	n.API.Drain()
	log.Info().Dur("drain_time", d).Msg("draining: /ready answers 503 and connections close after their answers; a second signal stops at once")
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-again:
	}
}

func devCommand() *cobra.Command {
	var dir, listen string
	var nodes int
	var exitWithParent bool
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a development cluster on SoftHSMv2 with a demo key store and key",
		Long: `dev prepares DIR once — per node a SoftHSMv2 token, a certificate and
DIR/nodeN/node.toml; a CA, cluster key material, an admin token, and a demo key
store with a SigV4 credential and an AES-256 key — then runs one
"xksproxy serve" process per node. Once they form one cluster and each
round-trips the demo key, it writes DIR/nodeN/pid, DIR/nodeN/admin.env,
DIR/kms-console.json and, last, DIR/client.json. Node N's XKS API listens on
the port of --listen plus N-1; other ports are chosen once and saved. Running
it again on the same DIR reuses everything. It never restarts a node that dies;
SIGINT or SIGTERM stops them all.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDev(dir, listen, nodes, exitWithParent)
		},
	}
	cmd.Flags().StringVar(&dir, "data", ".xksproxy-dev", "directory for tokens, certificates, credentials, Raft data and client files")
	cmd.Flags().StringVar(&listen, "listen", "", "node 1's XKS API address (default "+devenv.DefaultListen+", or the one saved in DIR)")
	cmd.Flags().IntVar(&nodes, "nodes", 0, "number of nodes (1-9; default 1, or as many as DIR holds; more than DIR holds adds nodes)")
	cmd.Flags().BoolVar(&exitWithParent, "exit-with-parent", false, "stop the nodes and exit when the parent process exits (make run uses it: make killed by a signal does not pass it on)")
	return cmd
}

func runDev(dir, listen string, nodes int, exitWithParent bool) error {
	env, err := devenv.Prepare(dir, listen, nodes)
	if err != nil {
		return err
	}
	if err := env.RemoveClientFile(); err != nil {
		return err
	}
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if exitWithParent {
		var cancel context.CancelFunc
		ctx, cancel = untilOrphaned(ctx)
		defer cancel()
	}
	sup, err := env.Start(bin, os.Stderr)
	if err != nil {
		return err
	}
	defer sup.Stop(20 * time.Second)
	exited := 0
	waitCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err = env.WaitReady(waitCtx, func() bool {
		for {
			select {
			case <-sup.Exits():
				exited++
			default:
				return exited > 0
			}
		}
	})
	if err != nil {
		return err
	}
	if err := env.WriteClientFiles(); err != nil {
		return err
	}
	env.PrintWelcome(os.Stdout)
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(os.Stderr, "xksproxy dev: stopping the nodes")
			return nil
		case i := <-sup.Exits():
			fmt.Fprintf(os.Stderr, "xksproxy dev: %s exited; not restarting it\n", env.State.Nodes[i].ID)
		}
	}
}

// untilOrphaned ends ctx once this process's parent has exited (the
// process then belongs to another parent).
func untilOrphaned(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	parent := os.Getppid()
	go func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if os.Getppid() != parent {
					fmt.Fprintln(os.Stderr, "xksproxy dev: the parent process exited")
					cancel()
					return
				}
			}
		}
	}()
	return ctx, cancel
}

func clusterKeysCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster-keys",
		Short: "The key ceremony: cluster key material for every node's HSM; the cluster CA and node certificates",
		Long: `The cluster keys — a key-encryption key that wraps replicated key material and a
seal key that protects SigV4 secrets in the Raft log — must be in every node's
HSM. Generate the material once, import it into each node's HSM (also into a
node that joins later), then destroy the file.`,
	}
	generate := &cobra.Command{
		Use: "generate FILE", Short: "Write fresh cluster key material to FILE (mode 0600; never overwrites)", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error { return node.GenerateClusterKeys(args[0]) },
	}
	var configPath string
	importCmd := &cobra.Command{
		Use: "import FILE", Short: "Import cluster key material into this node's HSM (run with the node stopped)", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			cfg, err := node.LoadConfig(configPath)
			if err != nil {
				return err
			}
			h, err := node.OpenHSM(cfg)
			if err != nil {
				return err
			}
			defer h.Close()
			if ok, err := h.HasClusterKeys(); err == nil && ok {
				return errors.New("this HSM already holds the cluster keys")
			}
			if err := node.ImportClusterKeys(h, args[0]); err != nil {
				return err
			}
			for _, hc := range cfg.HSMs() {
				fmt.Println("imported the cluster keys into token", hc.TokenLabel)
			}
			return nil
		},
	}
	importCmd.Flags().StringVar(&configPath, "config", "/etc/xksproxy/node.toml", "the node's TOML configuration file")
	cmd.AddCommand(generate, importCmd, clusterCACommand(), issueNodeCommand())
	return cmd
}
