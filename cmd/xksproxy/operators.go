package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/xksproxy/xksproxy/admin"
	"github.com/xksproxy/xksproxy/admin/server"
	"github.com/xksproxy/xksproxy/fsm"
)

// exitAuditBroken is the exit status of `audit verify` when the trail does
// not verify: a record was edited, removed or reordered.
const exitAuditBroken = 4

func tokenCommand(o *cliOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage named operators and their admin tokens (roles: reader, killswitch, operator, admin)"}
	var role string
	create := &cobra.Command{
		Use: "create NAME", Short: "Create a named operator; its token is shown only now", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			res, err := run(o, func(ctx context.Context, c *admin.Client) (admin.NewOperator, error) {
				return c.CreateOperator(ctx, admin.CreateOperatorRequest{Name: args[0], Role: admin.Role(role)})
			}, func(res admin.NewOperator) {
				fmt.Printf("created operator %s with role %s — the token is shown only now:\n  %s\n", res.Name, res.Role, res.Token)
				fmt.Println("Store it in a file only its user reads (mode 0600) and pass --token-file, or set XKSPROXY_ADMIN_TOKEN.")
				printUnconfirmed(&res.Change)
			})
			return confirmedAlso(&res.Change, err)
		},
	}
	create.Flags().StringVar(&role, "role", "", "reader, killswitch, operator or admin (required)")
	create.MarkFlagRequired("role")
	list := &cobra.Command{
		Use: "list", Short: "List the named operators (never their tokens)", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := run(o, func(ctx context.Context, c *admin.Client) ([]admin.OperatorInfo, error) {
				return c.ListOperators(ctx)
			}, func(res []admin.OperatorInfo) {
				rows := [][]string{}
				for _, op := range res {
					rows = append(rows, []string{op.Name, string(op.Role), op.Token, op.CreatedAt.Format(time.RFC3339)})
				}
				table("NAME\tROLE\tTOKEN\tCREATED", rows)
			})
			return err
		},
	}
	revoke := &cobra.Command{
		Use: "revoke NAME", Short: "Revoke an operator's token on every node", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return confirmed(run(o, func(ctx context.Context, c *admin.Client) (admin.Change, error) {
				return c.RevokeOperator(ctx, args[0])
			}, func(res admin.Change) { printChange("revoked", "operator "+args[0], &res) }))
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func auditCommand(o *cliOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Read and verify the audit trail of admin changes"}
	var since string
	list := &cobra.Command{
		Use: "list", Short: "List the audit trail, oldest first", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var from time.Time
			if since != "" {
				t, err := time.Parse(time.RFC3339, since)
				if err != nil {
					return fmt.Errorf("--since: %w (want RFC 3339, e.g. 2026-12-01T00:00:00Z)", err)
				}
				from = t
			}
			_, err := run(o, func(ctx context.Context, c *admin.Client) (admin.AuditTrail, error) {
				return c.ListAudit(ctx, from)
			}, func(res admin.AuditTrail) {
				rows := [][]string{}
				for _, r := range res.Records {
					rows = append(rows, []string{fmt.Sprint(r.Seq), r.At.Format(time.RFC3339), r.Actor.Kind + ":" + r.Actor.Name,
						string(r.Actor.Role), r.Actor.Node, r.Actor.RemoteAddr, r.Action, string(r.Detail), r.Outcome})
				}
				table("SEQ\tTIME\tWHO\tROLE\tNODE\tFROM\tACTION\tDETAIL\tOUTCOME", rows)
			})
			return err
		},
	}
	list.Flags().StringVar(&since, "since", "", "only records from this time on (RFC 3339)")
	var file string
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Check the audit trail's hash chain (a node's, or a backup file's with --file); exit status 4 names the first record edited, removed or reordered",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var res admin.AuditVerification
			var err error
			if file != "" {
				res, err = verifyBackupFile(file)
				if err == nil {
					err = o.print(res, func() { printVerification(file, res) })
				}
			} else {
				res, err = run(o, func(ctx context.Context, c *admin.Client) (admin.AuditVerification, error) {
					return c.VerifyAudit(ctx)
				}, func(res admin.AuditVerification) { printVerification("the node's trail", res) })
			}
			if err == nil && !res.Verified {
				return &exitError{exitAuditBroken, fmt.Errorf("the audit trail does not verify at record %d (position %d): %s",
					res.Break.Seq, res.Break.Position, res.Break.Problem)}
			}
			return err
		},
	}
	verify.Flags().StringVar(&file, "file", "", "verify the trail in this backup (snapshot save) instead of a node's; needs no admin API")
	cmd.AddCommand(list, verify)
	return cmd
}

// verifyBackupFile checks the trail of a backup file (or of a bare FSM
// snapshot), reading nothing else of it: a file whose trail was edited is
// what this looks for, and the node would refuse to restore it.
func verifyBackupFile(path string) (admin.AuditVerification, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return admin.AuditVerification{}, err
	}
	var backup struct {
		Snapshot json.RawMessage `json:"snapshot"`
	}
	if json.Unmarshal(data, &backup) == nil && len(backup.Snapshot) > 0 {
		data = backup.Snapshot
	}
	anchor, records, err := fsm.ReadAuditTrail(data)
	if err != nil {
		return admin.AuditVerification{}, fmt.Errorf("%s: %w", path, err)
	}
	if len(records) == 0 && anchor == (fsm.AuditAnchor{}) {
		return admin.AuditVerification{}, errors.New(path + " holds no audit trail (a backup from before command set 3, or of a cluster without admin changes)")
	}
	return server.Verification(anchor, records), nil
}

func printVerification(what string, res admin.AuditVerification) {
	if res.Verified {
		fmt.Printf("%s verifies: %d records after record %d, head %s\n", what, res.Records, res.Anchor.Seq, res.Head)
		return
	}
	fmt.Printf("%s DOES NOT VERIFY: record %d (position %d of %d): %s\n", what, res.Break.Seq, res.Break.Position, res.Records, res.Break.Problem)
}
