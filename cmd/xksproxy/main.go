// Command xksproxy is the XKS proxy: `serve` runs a node from its TOML file,
// `dev` runs a ready-made development node on SoftHSMv2.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/xksproxy/xksproxy/cmd/xksproxy/internal/devenv"
	"github.com/xksproxy/xksproxy/cmd/xksproxy/internal/node"
	"github.com/xksproxy/xksproxy/xksapi"
)

func main() {
	root := &cobra.Command{
		Use:           "xksproxy",
		Short:         "An AWS KMS External Key Store (XKS) proxy backed by PKCS#11 HSMs",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(serveCommand(), devCommand(), versionCommand())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "xksproxy:", err)
		os.Exit(1)
	}
}

func versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Run:   func(*cobra.Command, []string) { fmt.Println("xksproxy", xksapi.Version) },
	}
}

func serveCommand() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a proxy node from its TOML configuration",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := node.LoadConfig(configPath)
			if err != nil {
				return err
			}
			return runNode(cfg, configPath, nil)
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "/etc/xksproxy/node.toml", "the node's TOML configuration file")
	return cmd
}

func devCommand() *cobra.Command {
	var dir, listen string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a development node on SoftHSMv2 with a demo key store and key",
		Long: `dev prepares DIR once (a SoftHSMv2 token, a CA and TLS certificate, a demo key
store with a SigV4 credential, a demo AES-256 key, DIR/node.toml) and serves it.
After a real encrypt/decrypt round trip it writes DIR/client.json and
DIR/kms-console.json. Running it again on the same DIR reuses everything.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := devenv.Prepare(dir, listen)
			if err != nil {
				return err
			}
			cfg, err := env.NodeConfig()
			if err != nil {
				return err
			}
			return runNode(cfg, "", func() error {
				if err := env.Verify(); err != nil {
					return fmt.Errorf("self-check round trip failed: %w", err)
				}
				if err := env.WriteClientFiles(); err != nil {
					return err
				}
				env.PrintWelcome(os.Stdout)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&dir, "data", ".xksproxy-dev", "directory for the token, certificates, credentials and client files")
	cmd.Flags().StringVar(&listen, "listen", "", "XKS API address (default "+devenv.DefaultListen+", or the one saved in DIR)")
	return cmd
}

// runNode serves cfg until SIGINT or SIGTERM; SIGHUP reloads the bootstrap
// state from configPath when there is one. started runs once the node is
// listening; its failure stops the node.
func runNode(cfg *node.Config, configPath string, started func() error) error {
	log, err := node.NewLogger(cfg.Log, os.Stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := node.Start(cfg, log)
	if err != nil {
		return err
	}
	if started != nil {
		if err := started(); err != nil {
			n.Close()
			return err
		}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
wait:
	for {
		select {
		case <-hup:
			if configPath == "" {
				continue
			}
			fresh, rerr := node.LoadConfig(configPath)
			if rerr == nil {
				rerr = n.Reload(fresh)
			}
			if rerr != nil {
				log.Error().Err(rerr).Msg("reload refused; the previous state stays in force")
			}
		case <-ctx.Done():
			log.Info().Msg("shutting down")
			break wait
		case err = <-n.Err():
			log.Error().Err(err).Msg("listener failed")
			break wait
		}
	}
	if cerr := n.Close(); err == nil {
		err = cerr
	}
	return err
}
