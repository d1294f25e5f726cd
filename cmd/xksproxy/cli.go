package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/xksproxy/xksproxy/admin"
	"github.com/xksproxy/xksproxy/fsm"
)

// The operator CLI talks to any node's admin API. The endpoint and its
// CA come from flags or from XKSPROXY_ADMIN and XKSPROXY_ADMIN_CA; the
// token from a file (--token-file, XKSPROXY_ADMIN_TOKEN_FILE) or from
// XKSPROXY_ADMIN_TOKEN, never from the command line, which every user of
// the machine can read (ps). dev writes DIR/nodeN/admin.env, which names
// the token's file.
type cliOptions struct {
	admin, tokenFile, ca string
	json, stale          bool
}

func (o *cliOptions) bind(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&o.admin, "admin", "", "admin API URL (default $XKSPROXY_ADMIN)")
	f.StringVar(&o.tokenFile, "token-file", "", "file holding the admin bearer token (default $XKSPROXY_ADMIN_TOKEN, else the file $XKSPROXY_ADMIN_TOKEN_FILE)")
	f.StringVar(&o.ca, "ca", "", "CA certificate of the admin API (default $XKSPROXY_ADMIN_CA)")
	f.BoolVar(&o.json, "json", false, "print the admin API's JSON instead of a table")
	f.BoolVar(&o.stale, "stale", false, "reads: answer from the node's state as it is, without asking the leader (no round trip, works without a leader); "+
		"prints the node's applied index and its last leader contact on stderr")
}

func (o *cliOptions) client() (*admin.Client, error) {
	endpoint := firstNonEmpty(o.admin, os.Getenv("XKSPROXY_ADMIN"))
	if endpoint == "" {
		return nil, errors.New("no admin endpoint: pass --admin or set XKSPROXY_ADMIN (see DIR/node1/admin.env)")
	}
	token := os.Getenv("XKSPROXY_ADMIN_TOKEN")
	file := o.tokenFile
	if file == "" && token == "" {
		file = os.Getenv("XKSPROXY_ADMIN_TOKEN_FILE")
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("admin token: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	c, err := admin.NewClient(endpoint, token, firstNonEmpty(o.ca, os.Getenv("XKSPROXY_ADMIN_CA")))
	if err != nil || !o.stale {
		return c, err
	}
	c.Stale = true
	// On stderr, so that --json's stdout stays the API's JSON alone.
	// A write goes through the leader whatever the flag: nothing to say.
	c.OnFreshness = func(r *admin.Route, f admin.Freshness) {
		if !r.Stale {
			return
		}
		fmt.Fprintf(os.Stderr, "stale read: the node's applied index is %d, its last contact with the leader %v ago\n",
			f.AppliedIndex, f.LeaderContactAge)
	}
	return c, nil
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// run calls the admin API through do and prints the answer as JSON or with
// human.
func run[T any](o *cliOptions, do func(context.Context, *admin.Client) (T, error), human func(T)) (T, error) {
	c, err := o.client()
	if err != nil {
		var zero T
		return zero, err
	}
	out, err := do(context.Background(), c)
	if err != nil {
		return out, err
	}
	return out, o.print(out, func() { human(out) })
}

// The exit statuses scripts may rely on (README, The operator CLI): 0 when
// a change is committed and every node confirmed it, exitNotConfirmed when
// it is committed but some node did not confirm it, 1 when it was not
// committed (or any other failure).
const exitNotConfirmed = 3

// exitError is a failure with its own exit status.
type exitError struct {
	status int
	err    error
}

func (e *exitError) Error() string { return e.err.Error() }

// exitStatus is the process's exit status for err.
func exitStatus(err error) int {
	var e *exitError
	if errors.As(err, &e) {
		return e.status
	}
	return 1
}

// confirmed turns a committed change that some node did not confirm into
// exitNotConfirmed, naming each such node, why, and when it stops serving
// by itself at the latest.
func confirmed(res admin.Change, err error) error {
	if err != nil || res.ConfirmedEverywhere() {
		return err
	}
	var nodes []string
	for _, a := range res.Acks {
		if !a.Confirmed {
			nodes = append(nodes, a.Node+" ("+unconfirmedReason(a)+")")
		}
	}
	return &exitError{exitNotConfirmed, fmt.Errorf("committed (raft index %d) but not confirmed by %d of %d nodes: %s",
		res.Index, res.Nodes-res.Confirmed, res.Nodes, strings.Join(nodes, "; "))}
}

// confirmedAlso is confirmed for an answer that carries its change's
// confirmation (key create, grant add).
func confirmedAlso(c *admin.Change, err error) error {
	if c == nil {
		return err
	}
	return confirmed(*c, err)
}

// printUnconfirmed lists the nodes that did not confirm a change whose
// answer is not the change itself.
func printUnconfirmed(c *admin.Change) {
	if c == nil {
		return
	}
	for _, a := range c.Acks {
		if !a.Confirmed {
			fmt.Printf("  %-20s NOT CONFIRMED: %s\n", a.Node, unconfirmedReason(a))
		}
	}
}

func unconfirmedReason(a admin.Ack) string {
	why := a.Error
	if !a.StopsServingBy.IsZero() {
		why += "; stops serving by itself by " + a.StopsServingBy.Format(time.RFC3339)
	}
	return why
}

func (o *cliOptions) print(out any, human func()) error {
	if o.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	human()
	return nil
}

func table(header string, rows [][]string) {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, header)
	for _, r := range rows {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
	w.Flush()
}

func onOff(b bool, on, off string) string {
	if b {
		return on
	}
	return off
}

func cliCommands() []*cobra.Command {
	o := &cliOptions{}
	cmds := []*cobra.Command{keyStoreCommand(o), credentialCommand(o), keyCommand(o), grantCommand(o), clusterCommand(o), snapshotCommand(o),
		tokenCommand(o), auditCommand(o)}
	for _, c := range cmds {
		o.bind(c)
	}
	return cmds
}

func keyStoreCommand(o *cliOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "keystore", Short: "Manage key stores (one per XKS URI path prefix)"}
	var req admin.CreateKeyStoreRequest
	create := &cobra.Command{
		Use: "create NAME", Short: "Create a key store and its first SigV4 credential", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			req.Name = args[0]
			_, err := run(o, func(ctx context.Context, c *admin.Client) (admin.CreateKeyStoreResponse, error) {
				return c.CreateKeyStore(ctx, req)
			}, func(res admin.CreateKeyStoreResponse) {
				fmt.Printf("created key store %s at %s (region %s, grants %s)\n", res.KeyStore.Name, res.KeyStore.URIPath, res.KeyStore.Region, res.KeyStore.GrantsMode)
				printNewCredential(&res.Credential)
			})
			return err
		},
	}
	create.Flags().StringVar(&req.URIPath, "uri-path", "", "XksProxyUriPath, e.g. /payments/kms/xks/v1 (default /NAME/kms/xks/v1)")
	create.Flags().StringVar(&req.Region, "region", "", "AWS region of the KMS key store (required)")
	create.Flags().IntVar(&req.QuotaRPS, "quota", 0, "requests per second for the whole key store (0 = unlimited)")
	create.Flags().StringVar(&req.GrantsMode, "grants", "closed", "closed: a key without a matching grant is refused; open: any authenticated caller")
	create.Flags().StringVar(&req.KeyMode, "key-mode", "replicated", "replicated: key material generated and replicated by the cluster; shared: keys every HSM already holds, adopted by label")

	list := &cobra.Command{
		Use: "list", Short: "List key stores", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := run(o, func(ctx context.Context, c *admin.Client) ([]admin.KeyStoreInfo, error) {
				return c.ListKeyStores(ctx)
			}, func(res []admin.KeyStoreInfo) {
				rows := [][]string{}
				for _, ks := range res {
					rows = append(rows, []string{ks.Name, ks.URIPath, ks.Region, onOff(ks.Enabled, "enabled", "DISABLED"),
						ks.GrantsMode, fmt.Sprint(len(ks.Credentials)), fmt.Sprint(ks.Keys)})
				}
				table("NAME\tURI PATH\tREGION\tSTATE\tGRANTS\tCREDENTIALS\tKEYS", rows)
			})
			return err
		},
	}
	show := &cobra.Command{
		Use: "show NAME", Short: "Show a key store", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			_, err := run(o, func(ctx context.Context, c *admin.Client) (admin.KeyStoreInfo, error) {
				return c.ShowKeyStore(ctx, args[0])
			}, func(ks admin.KeyStoreInfo) {
				fmt.Printf("name        %s\nuri path    %s\nregion      %s\nstate       %s\ngrants      %s\nkey mode    %s\nquota       %d/s\nkeys        %d\n",
					ks.Name, ks.URIPath, ks.Region, onOff(ks.Enabled, "enabled", "DISABLED"), ks.GrantsMode, ks.KeyMode, ks.QuotaRPS, ks.Keys)
				printCredentials(ks.Credentials)
			})
			return err
		},
	}
	cmd.AddCommand(create, list, show,
		switchCommand(o, "disable", "keystore", "Disable a key store on every node (kill switch)", 1),
		switchCommand(o, "enable", "keystore", "Enable a key store on every node", 1))
	return cmd
}

// switchCommand is enable/disable of a key store (1 arg) or key (2 args):
// it returns once every node confirms, printing each node's time.
func switchCommand(o *cliOptions, verb, what, short string, nargs int) *cobra.Command {
	use := verb + " KEYSTORE"
	if nargs == 2 {
		use += " KEYID"
	}
	return &cobra.Command{
		Use: use, Short: short, Args: cobra.ExactArgs(nargs),
		RunE: func(_ *cobra.Command, args []string) error {
			subject := "key store " + args[0]
			do := func(ctx context.Context, c *admin.Client) (admin.Change, error) {
				if verb == "enable" {
					return c.EnableKeyStore(ctx, args[0])
				}
				return c.DisableKeyStore(ctx, args[0])
			}
			if nargs == 2 {
				subject = "key " + args[0] + "/" + args[1]
				do = func(ctx context.Context, c *admin.Client) (admin.Change, error) {
					if verb == "enable" {
						return c.EnableKey(ctx, args[0], args[1])
					}
					return c.DisableKey(ctx, args[0], args[1])
				}
			}
			return confirmed(run(o, do, func(res admin.Change) { printChange(verb+"d", subject, &res) }))
		},
	}
}

func printChange(verb, subject string, res *admin.Change) {
	fmt.Printf("%s %s on %d/%d nodes in %s (raft index %d)\n", verb, subject, res.Confirmed, res.Nodes, res.Elapsed, res.Index)
	for _, a := range res.Acks {
		if a.Confirmed {
			fmt.Printf("  %-20s confirmed after %v\n", a.Node, a.After.Round(time.Microsecond))
		} else {
			fmt.Printf("  %-20s NOT CONFIRMED: %s\n", a.Node, unconfirmedReason(a))
		}
	}
}

func printNewCredential(c *admin.NewCredential) {
	console, _ := json.MarshalIndent(c.KMSConsole, "", "  ")
	fmt.Printf(`
New SigV4 credential for key store %s — the secret is shown only now:
  access key id      %s
  secret access key  %s
`, c.KeyStore, c.AccessKeyID, c.SecretAccessKey)
	if c.ExpiresAt != nil {
		fmt.Printf("  expires            %s\n", c.ExpiresAt.Format(time.RFC3339))
	}
	fmt.Printf("\nAWS KMS console proxy configuration file:\n%s\n", console)
}

func printCredentials(creds []admin.CredentialInfo) {
	rows := [][]string{}
	for _, c := range creds {
		exp := "never"
		if c.ExpiresAt != nil {
			exp = c.ExpiresAt.Format(time.RFC3339)
		}
		rows = append(rows, []string{c.AccessKeyID, c.CreatedAt.Format(time.RFC3339), exp, onOff(c.Expired, "EXPIRED", "active")})
	}
	table("ACCESS KEY ID\tCREATED\tEXPIRES\tSTATE", rows)
}

func credentialCommand(o *cliOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "credential", Short: "Manage a key store's SigV4 credentials (rotation without restart)"}
	var expiresIn time.Duration
	var consoleFile string
	add := &cobra.Command{
		Use: "add KEYSTORE", Short: "Add a credential; its secret is shown once", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			var req admin.AddCredentialRequest
			if expiresIn > 0 {
				t := time.Now().Add(expiresIn).UTC()
				req.ExpiresAt = &t
			}
			res, err := run(o, func(ctx context.Context, c *admin.Client) (admin.NewCredential, error) {
				return c.AddCredential(ctx, args[0], req)
			}, func(res admin.NewCredential) { printNewCredential(&res) })
			if err == nil && consoleFile != "" {
				b, _ := json.MarshalIndent(res.KMSConsole, "", "  ")
				err = os.WriteFile(consoleFile, append(b, '\n'), 0o600)
			}
			return err
		},
	}
	add.Flags().DurationVar(&expiresIn, "expires-in", 0, "the credential stops working after this long (e.g. 2160h); 0 = never")
	add.Flags().StringVar(&consoleFile, "console-file", "", "also write the AWS KMS console JSON file here (mode 0600)")
	remove := &cobra.Command{
		Use: "remove KEYSTORE ACCESS_KEY_ID", Short: "Revoke a credential on every node", Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			return confirmed(run(o, func(ctx context.Context, c *admin.Client) (admin.Change, error) {
				return c.RemoveCredential(ctx, args[0], args[1])
			}, func(res admin.Change) { printChange("revoked", "credential "+args[1], &res) }))
		},
	}
	list := &cobra.Command{
		Use: "list KEYSTORE", Short: "List credentials (never their secrets)", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			_, err := run(o, func(ctx context.Context, c *admin.Client) ([]admin.CredentialInfo, error) {
				return c.ListCredentials(ctx, args[0])
			}, printCredentials)
			return err
		},
	}
	cmd.AddCommand(add, remove, list)
	return cmd
}

func keyCommand(o *cliOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "key", Short: "Manage external keys"}
	var req admin.CreateKeyRequest
	create := &cobra.Command{
		Use: "create KEYSTORE KEYID", Short: "Create a key (AES-256, replicated to every node's HSM)", Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			req.ID = args[1]
			// The admin API reads an absent usage as ENCRYPT+DECRYPT; an
			// explicitly empty one is a mistake, not a wish for that default.
			if len(req.Usage) == 0 {
				return errors.New("--usage is empty: name at least one of ENCRYPT, DECRYPT, SIGN, VERIFY, WRAP, UNWRAP, DERIVE (default ENCRYPT,DECRYPT)")
			}
			k, err := run(o, func(ctx context.Context, c *admin.Client) (admin.KeyInfo, error) {
				return c.CreateKey(ctx, args[0], req)
			}, func(k admin.KeyInfo) {
				fmt.Printf("created key %s/%s (%s, version %d)\n", k.KeyStore, k.ID, strings.Join(k.Usage, "+"), k.CurrentVersion)
				printUnconfirmed(k.Confirmation)
			})
			return confirmedAlso(k.Confirmation, err)
		},
	}
	create.Flags().StringSliceVar(&req.Usage, "usage", fsm.DefaultUsage.Names(), "usages the key holds, as GetKeyMetadata reports them: ENCRYPT, DECRYPT, SIGN, VERIFY, WRAP, UNWRAP, DERIVE (only ENCRYPT and DECRYPT open an operation)")
	create.Flags().StringVar(&req.HSMLabel, "hsm-label", "", "adopt an AES-256 key every HSM already holds under this label instead of generating one")
	list := &cobra.Command{
		Use: "list KEYSTORE", Short: "List a key store's keys", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			_, err := run(o, func(ctx context.Context, c *admin.Client) ([]admin.KeyInfo, error) {
				return c.ListKeys(ctx, args[0])
			}, func(res []admin.KeyInfo) {
				rows := [][]string{}
				for _, k := range res {
					rows = append(rows, []string{k.ID, keyState(&k), strings.Join(k.Usage, "+"), fmt.Sprint(k.CurrentVersion), fmt.Sprint(len(k.Versions))})
				}
				table("KEY ID\tSTATE\tUSAGE\tCURRENT\tVERSIONS", rows)
			})
			return err
		},
	}
	show := &cobra.Command{
		Use: "show KEYSTORE KEYID", Short: "Show a key and its versions", Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			_, err := run(o, func(ctx context.Context, c *admin.Client) (admin.KeyInfo, error) {
				return c.ShowKey(ctx, args[0], args[1])
			}, func(k admin.KeyInfo) {
				fmt.Printf("key         %s/%s\nstate       %s\nusage       %s\ncurrent     version %d\ncreated     %s\n",
					k.KeyStore, k.ID, keyState(&k), strings.Join(k.Usage, "+"), k.CurrentVersion, k.CreatedAt.Format(time.RFC3339))
				if l := k.Legacy; l != nil {
					fmt.Printf("legacy      %s ciphertexts decrypt with version %d (static metadata %q)\n", l.Format, l.Version, l.StaticMetadataB64)
				}
				rows := [][]string{}
				for _, v := range k.Versions {
					rows = append(rows, []string{fmt.Sprint(v.Number), v.HSMLabel, onOff(v.Wrapped, "replicated", "shared"), v.CreatedAt.Format(time.RFC3339)})
				}
				table("VERSION\tHSM LABEL\tMATERIAL\tCREATED", rows)
			})
			return err
		},
	}
	var rotateLabel string
	rotate := &cobra.Command{
		Use: "rotate KEYSTORE KEYID", Short: "Add a new version and make it current once every node holds it", Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			return confirmed(run(o, func(ctx context.Context, c *admin.Client) (admin.Change, error) {
				if rotateLabel != "" {
					return c.RotateKeyAdopting(ctx, args[0], args[1], rotateLabel)
				}
				return c.RotateKey(ctx, args[0], args[1])
			}, func(res admin.Change) { printChange("rotated", "key "+args[0]+"/"+args[1], &res) }))
		},
	}
	rotate.Flags().StringVar(&rotateLabel, "hsm-label", "", "in a shared key store: adopt the AES-256 key every HSM already holds under this label as the new version")
	var days int
	schedule := &cobra.Command{
		Use: "schedule-deletion KEYSTORE KEYID", Short: "Delete a disabled key after a waiting period (7-30 days)", Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			_, err := run(o, func(ctx context.Context, c *admin.Client) (admin.KeyInfo, error) {
				return c.ScheduleDeletion(ctx, args[0], args[1], days)
			}, func(k admin.KeyInfo) {
				fmt.Printf("key %s/%s will be deleted, and its material destroyed in every HSM, on %s\n", k.KeyStore, k.ID, k.DeletionDate.Format(time.RFC3339))
			})
			return err
		},
	}
	schedule.Flags().IntVar(&days, "days", 30, "waiting period in days (7-30)")
	cancelDeletion := &cobra.Command{
		Use: "cancel-deletion KEYSTORE KEYID", Short: "Cancel a scheduled deletion (the key stays disabled)", Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			_, err := run(o, func(ctx context.Context, c *admin.Client) (admin.KeyInfo, error) {
				return c.CancelDeletion(ctx, args[0], args[1])
			}, func(k admin.KeyInfo) {
				fmt.Printf("cancelled the deletion of key %s/%s; it is still disabled\n", k.KeyStore, k.ID)
			})
			return err
		},
	}
	cmd.AddCommand(create, list, show, rotate, schedule, cancelDeletion,
		switchCommand(o, "disable", "key", "Disable a key on every node (kill switch)", 2),
		switchCommand(o, "enable", "key", "Enable a key on every node", 2))
	return cmd
}

func keyState(k *admin.KeyInfo) string {
	switch {
	case k.Deleted:
		return "DELETED"
	case k.DeletionDate != nil:
		return "PENDING DELETION " + k.DeletionDate.Format(time.RFC3339)
	}
	return onOff(k.Enabled, "enabled", "DISABLED")
}

func grantCommand(o *cliOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "grant", Short: "Manage who may use keys (secondary authorization)"}
	var g admin.GrantInfo
	add := &cobra.Command{
		Use: "add KEYSTORE", Short: "Allow principals to use a key (or every key: --key '*')", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			res, err := run(o, func(ctx context.Context, c *admin.Client) (admin.GrantInfo, error) {
				return c.AddGrant(ctx, args[0], g)
			}, func(res admin.GrantInfo) {
				fmt.Printf("added grant %s: %s may %s on %s/%s\n", res.ID, strings.Join(res.Principals, ", "),
					strings.Join(res.Operations, "+"), res.KeyStore, res.KeyID)
				printUnconfirmed(res.Confirmation)
			})
			return confirmedAlso(res.Confirmation, err)
		},
	}
	f := add.Flags()
	f.StringVar(&g.KeyID, "key", "", "external key id, or '*' for every key of the key store (required)")
	f.StringArrayVar(&g.Principals, "principal", nil, "principal ARN pattern, '*' matches any run of characters (repeatable, required)")
	f.StringArrayVar(&g.Accounts, "account", nil, "only principals of this AWS account (repeatable)")
	f.StringArrayVar(&g.Regions, "region", nil, "only KMS keys in this region (repeatable)")
	f.StringArrayVar(&g.ViaServices, "via-service", nil, "only when KMS is called via this service (repeatable)")
	f.StringArrayVar(&g.SourceVPCs, "source-vpc", nil, "only requests from this VPC (repeatable)")
	f.StringArrayVar(&g.SourceVPCEs, "source-vpce", nil, "only requests through this VPC endpoint (repeatable)")
	f.StringArrayVar(&g.Operations, "operation", nil, "GetKeyMetadata, Encrypt or Decrypt (repeatable; default all)")
	remove := &cobra.Command{
		Use: "remove KEYSTORE GRANT_ID", Short: "Remove a grant on every node", Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			return confirmed(run(o, func(ctx context.Context, c *admin.Client) (admin.Change, error) {
				return c.RemoveGrant(ctx, args[0], args[1])
			}, func(res admin.Change) { printChange("removed", "grant "+args[1], &res) }))
		},
	}
	list := &cobra.Command{
		Use: "list KEYSTORE", Short: "List grants", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			_, err := run(o, func(ctx context.Context, c *admin.Client) ([]admin.GrantInfo, error) {
				return c.ListGrants(ctx, args[0])
			}, func(res []admin.GrantInfo) {
				rows := [][]string{}
				for _, g := range res {
					var cond []string
					for _, c := range []struct {
						name string
						vals []string
					}{{"account", g.Accounts}, {"region", g.Regions}, {"via", g.ViaServices}, {"vpc", g.SourceVPCs}, {"vpce", g.SourceVPCEs}} {
						if len(c.vals) > 0 {
							cond = append(cond, c.name+"="+strings.Join(c.vals, "|"))
						}
					}
					rows = append(rows, []string{g.ID, g.KeyID, strings.Join(g.Principals, ","), strings.Join(g.Operations, "+"), strings.Join(cond, " ")})
				}
				table("GRANT ID\tKEY\tPRINCIPALS\tOPERATIONS\tCONDITIONS", rows)
			})
			return err
		},
	}
	cmd.AddCommand(add, remove, list)
	return cmd
}

func clusterCommand(o *cliOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Inspect and change cluster membership"}
	status := &cobra.Command{
		Use: "status", Short: "Show the leader, the voters and each node's readiness", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := run(o, func(ctx context.Context, c *admin.Client) (admin.ClusterStatus, error) {
				return c.ClusterStatus(ctx)
			}, func(st admin.ClusterStatus) {
				if st.Leader == nil {
					fmt.Println("leader: none (election in progress)")
				} else {
					fmt.Printf("leader: %s (XKS API %s)\n", st.Leader.ID, st.Leader.APIAddress)
				}
				fmt.Printf("command set: %d\n", st.CommandSet)
				rows := [][]string{}
				for _, n := range st.Nodes {
					ready := "ready"
					if !n.Ready {
						ready = "NOT READY: " + n.NotReady
					}
					// A build from before versions were reported says nothing.
					version := "older"
					if n.Version != "" {
						version = fmt.Sprintf("%s (set %d)", n.Version, n.CommandSet)
					}
					rows = append(rows, []string{n.ID, n.State, n.APIAddr, n.ClusterAddr, fmt.Sprint(n.AppliedIndex), n.HSM, version, ready})
				}
				table("NODE\tRAFT\tXKS API\tCLUSTER\tAPPLIED\tHSM\tVERSION\tREADINESS", rows)
				for _, n := range st.Nodes {
					if n.AddressMismatch != "" {
						fmt.Printf("%s: %s\n", n.ID, n.AddressMismatch)
					}
				}
			})
			return err
		},
	}
	join := &cobra.Command{
		Use: "join NODE_ID CLUSTER_ADDRESS", Short: "Admit a node as a voter (idempotent)", Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			_, err := run(o, func(ctx context.Context, c *admin.Client) (struct{}, error) {
				return struct{}{}, c.JoinNode(ctx, args[0], args[1])
			}, func(struct{}) { fmt.Printf("%s is a voter at %s\n", args[0], args[1]) })
			return err
		},
	}
	remove := &cobra.Command{
		Use: "remove NODE_ID", Short: "Remove a node from the voters", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			_, err := run(o, func(ctx context.Context, c *admin.Client) (struct{}, error) {
				return struct{}{}, c.RemoveNode(ctx, args[0])
			}, func(struct{}) { fmt.Printf("removed %s\n", args[0]) })
			return err
		},
	}
	cmd.AddCommand(status, join, remove)
	return cmd
}

func snapshotCommand(o *cliOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Short: "Back up and restore the replicated state (secrets stay sealed, keys stay wrapped)"}
	save := &cobra.Command{
		Use: "save FILE", Short: "Write the cluster's current state to FILE (mode 0600)", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			data, err := c.SaveSnapshot(context.Background(), o.stale)
			if err != nil {
				return err
			}
			if err := os.WriteFile(args[0], data, 0o600); err != nil {
				return err
			}
			fmt.Printf("saved %d bytes to %s\n", len(data), args[0])
			return nil
		},
	}
	var allowUnauthenticated bool
	restore := &cobra.Command{
		Use: "restore FILE", Short: "Replace the cluster's state with FILE (disaster recovery; every node takes it) once its MAC verifies", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			res, err := c.RestoreSnapshot(context.Background(), data, allowUnauthenticated)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			fmt.Printf("restored %s (raft index %d); nodes unwrap its keys into their HSMs and turn ready\n", args[0], res.Index)
			return nil
		},
	}
	restore.Flags().BoolVar(&allowUnauthenticated, "allow-unauthenticated", false,
		"also restore a backup without a MAC (written by an older xksproxy); once, to migrate: take a new backup right after")
	inspect := &cobra.Command{
		Use: "inspect FILE", Short: "Describe a backup (cluster, time, index, counts) and check its MAC with a node's HSM, without restoring", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			info, err := run(o, func(ctx context.Context, c *admin.Client) (admin.BackupInfo, error) {
				return c.InspectSnapshot(ctx, data)
			}, func(info admin.BackupInfo) {
				savedAt := "unknown"
				if info.SavedAt != nil {
					savedAt = info.SavedAt.Format(time.RFC3339)
				}
				mac := map[string]string{
					"verified":  "verified (made by this cluster's HSMs for exactly this content)",
					"failed":    "FAILED: modified, or from another cluster",
					"absent":    "none (a backup of an older version; restorable only with --allow-unauthenticated)",
					"unchecked": "not checked (the node's HSM did not answer)",
				}[info.MAC]
				fmt.Printf("file          %s\ncluster       %s (this cluster: %s)\nsaved         %s by %s\nMAC           %s\n",
					args[0], firstNonEmpty(info.ClusterID, "unknown"), info.ThisClusterID, savedAt, firstNonEmpty(info.SavedBy, "unknown"), mac)
				if info.Valid {
					fmt.Printf("raft index    %d\nkey stores    %d\ncredentials   %d\nkeys          %d (and %d deleted)\ngrants        %d\n",
						info.Index, info.KeyStores, info.Credentials, info.Keys, info.DeletedKeys, info.Grants)
				}
				if info.Restorable {
					fmt.Println("restorable    yes")
				} else {
					fmt.Printf("restorable    no: %s\n", info.Problem)
				}
			})
			if err == nil && !info.Restorable {
				// The exit status tells scripts (a nightly check of the backups).
				return fmt.Errorf("%s is not restorable", args[0])
			}
			return err
		},
	}
	cmd.AddCommand(save, restore, inspect)
	return cmd
}
