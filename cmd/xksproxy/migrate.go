package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/spf13/cobra"

	"github.com/xksproxy/xksproxy/admin"
	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/xksapi"
)

// awsSampleSettings is what a migration reads of the settings.toml of AWS's
// sample proxy (aws-samples/aws-kms-xks-proxy, xks-axum/src/settings.rs).
// The HSM user PIN is deliberately not decoded: nothing here needs it, and
// what is not read cannot be printed.
type awsSampleSettings struct {
	Server struct {
		Region                string  `toml:"region"`
		CiphertextMetadataB64 *string `toml:"ciphertext_metadata_b64"`
	} `toml:"server"`
	Security struct {
		SigV4 *bool  `toml:"is_sigv4_auth_enabled"`
		TLS   bool   `toml:"is_tls_enabled"`
		MTLS  bool   `toml:"is_mtls_enabled"`
		Auth  string `toml:"secondary_auth"`
		Oso   *struct {
			PolarFilePath string `toml:"polar_file_path"`
		} `toml:"oso"`
	} `toml:"security"`
	TLS *struct {
		CertPEM           string `toml:"tls_cert_pem"`
		KeyPEM            string `toml:"tls_key_pem"`
		MTLSClientCAPEM   string `toml:"mtls_client_ca_pem"`
		MTLSClientDNSName string `toml:"mtls_client_dns_name"`
	} `toml:"tls"`
	PKCS11 struct {
		Module string `toml:"PKCS11_HSM_MODULE"`
	} `toml:"pkcs11"`
	Limits struct {
		MaxPlaintextB64 int `toml:"max_plaintext_in_base64"`
		MaxAADB64       int `toml:"max_aad_in_base64"`
	} `toml:"limits"`
	PKCS11Logger *struct {
		Library string `toml:"PKCS11_LOGGER_LIBRARY_PATH"`
	} `toml:"pkcs11_logger"`
	KeyStores []struct {
		URIPathPrefix string   `toml:"uri_path_prefix"`
		AccessKeyID   string   `toml:"sigv4_access_key_id"`
		Secret        string   `toml:"sigv4_secret_access_key"`
		KeyIDs        []string `toml:"xks_key_id_set"`
	} `toml:"external_key_stores"`
}

// migrationPlan is what `migrate aws-reference` does, or would do: the key
// stores and keys it creates, what stops it, and what the operator must do
// by hand. Its JSON (--json) never holds a secret.
type migrationPlan struct {
	Settings  string          `json:"settings"`
	KeyStores []plannedStore  `json:"keyStores"`
	Warnings  []string        `json:"warnings"`
	Problems  []string        `json:"problems"`
	NodeTOML  string          `json:"nodeToml"`
	Created   []string        `json:"created,omitempty"`
	Confirm   []*admin.Change `json:"confirmations,omitempty"`
}

type plannedStore struct {
	Name        string   `json:"name"`
	URIPath     string   `json:"uriPath"`
	Region      string   `json:"region"`
	AccessKeyID string   `json:"accessKeyId"`
	GrantsMode  string   `json:"grantsMode"`
	KeyIDs      []string `json:"keyIds"`
	// StaticMetadataB64 is the sample proxy's ciphertext_metadata_b64,
	// which every imported key remembers.
	StaticMetadataB64 string `json:"staticMetadataB64,omitempty"`
	// Exists: an earlier run created this key store (same name, URI path,
	// access key id, shared keys); KeysDone lists the keys it adopted.
	// A run resumes where an interrupted one stopped.
	Exists   bool     `json:"exists,omitempty"`
	KeysDone []string `json:"keysDone,omitempty"`
	secret   string
}

// migratedEarlier reports whether existing is the key store p describes,
// created by an earlier run of the same migration.
func migratedEarlier(existing *admin.KeyStoreInfo, p *plannedStore) bool {
	if existing.Name != p.Name || existing.URIPath != p.URIPath || existing.KeyMode != string(fsm.KeyModeShared) {
		return false
	}
	for _, cr := range existing.Credentials {
		if cr.AccessKeyID == p.AccessKeyID {
			return true
		}
	}
	return false
}

// The sample proxy's rule for uri_path_prefix (and AWS KMS's for the
// prefix of XksProxyUriPath): empty, or 9-117 characters; ours adds that
// it is made of /segments, which every path KMS accepts is.
var samplePrefixPattern = regexp.MustCompile(`^(/[A-Za-z0-9_-]+)+$`)

func migrateCommand() *cobra.Command {
	o := &cliOptions{}
	cmd := &cobra.Command{Use: "migrate", Short: "Move to this cluster from another XKS proxy, keeping AWS KMS's configuration and every ciphertext"}
	var dryRun bool
	reference := &cobra.Command{
		Use:   "aws-reference SETTINGS.toml",
		Short: "Import the key stores, credentials and keys of AWS's sample proxy (aws-samples/aws-kms-xks-proxy)",
		Long: `Creates one key store per [[external_key_stores]] of the sample proxy's settings.toml,
with the same URI path, region and SigV4 credential (AWS KMS keeps its configuration),
in shared key mode, adopting each key id as a key whose HSM label is that id and which
keeps decrypting the sample proxy's ciphertexts. Grants are open, unless the sample
proxy used Oso: then closed, and you add the grants your Polar policy expressed.
--dry-run prints the plan and every problem, and changes nothing. Either way the
node.toml lines for the TLS, mTLS and HSM settings found are printed (never the
secret or the PIN). Exits 1 when there is any problem; nothing is changed then.`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			plan, err := migrateAWSReference(context.Background(), c, args[0], dryRun)
			if plan == nil {
				return err
			}
			if perr := o.print(plan, func() { printPlan(plan, dryRun) }); err == nil {
				err = perr
			}
			if err != nil {
				return err
			}
			if len(plan.Problems) > 0 {
				return fmt.Errorf("the plan has problems (%d, printed above); nothing was changed", len(plan.Problems))
			}
			for _, ch := range plan.Confirm {
				if err := confirmedAlso(ch, nil); err != nil {
					return err
				}
			}
			return nil
		},
	}
	reference.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan and every problem; change nothing")
	cmd.AddCommand(reference)
	o.bind(cmd)
	return cmd
}

// migrateAWSReference plans the migration from the settings file at path,
// checks it against the cluster and, unless dryRun or a problem stops it,
// carries it out. The plan is returned in every case, for printing.
func migrateAWSReference(ctx context.Context, c *admin.Client, path string, dryRun bool) (*migrationPlan, error) {
	var s awsSampleSettings
	if _, err := toml.DecodeFile(path, &s); err != nil {
		return nil, fmt.Errorf("reading the sample proxy's settings: %w", err)
	}
	plan := planAWSReference(path, &s)
	if err := checkAgainstCluster(ctx, c, plan); err != nil {
		return plan, err
	}
	if dryRun || len(plan.Problems) > 0 {
		return plan, nil
	}
	return plan, carryOut(ctx, c, plan)
}

// planAWSReference turns the settings into key stores, and reports what
// the settings alone show to be wrong.
func planAWSReference(path string, s *awsSampleSettings) *migrationPlan {
	plan := &migrationPlan{Settings: path, KeyStores: []plannedStore{}, Warnings: []string{}, Problems: []string{}}
	problem := func(format string, a ...any) { plan.Problems = append(plan.Problems, fmt.Sprintf(format, a...)) }
	warn := func(format string, a ...any) { plan.Warnings = append(plan.Warnings, fmt.Sprintf(format, a...)) }

	grants := string(fsm.GrantsOpen)
	if strings.EqualFold(s.Security.Auth, "Oso") {
		grants = string(fsm.GrantsClosed)
		policy := "its Polar file"
		if s.Security.Oso != nil && s.Security.Oso.PolarFilePath != "" {
			policy = s.Security.Oso.PolarFilePath
		}
		warn("the sample proxy authorized requests with Oso (%s); Polar policies are not translated, so every key store is created with closed grants: "+
			"until you add them (xksproxy grant add KEYSTORE --key KEYID --principal ARN [--operation ...]) for each principal and operation the policy allowed, every Encrypt and Decrypt is refused", policy)
	} else if s.Security.Auth != "" {
		problem("unknown secondary_auth %q (the sample proxy knows only Oso)", s.Security.Auth)
	}
	if s.Security.SigV4 != nil && !*s.Security.SigV4 {
		warn("the sample proxy did not verify SigV4 (is_sigv4_auth_enabled = false); this cluster always does, with the credentials below")
	}
	var static []byte
	var staticB64 string
	if s.Server.CiphertextMetadataB64 != nil {
		staticB64 = *s.Server.CiphertextMetadataB64
		var err error
		static, err = base64.StdEncoding.Strict().DecodeString(staticB64)
		switch {
		case err != nil:
			problem("[server] ciphertext_metadata_b64 %q is not base64: %v", staticB64, err)
		case len(static) > fsm.MaxCiphertextMetadata:
			problem("[server] ciphertext_metadata_b64 is %d bytes; at most %d", len(static), fsm.MaxCiphertextMetadata)
		case fsm.ConfusableWithOurs(static):
			problem("[server] ciphertext_metadata_b64 %q could be mistaken for this proxy's own ciphertext metadata (5 bytes starting with 1, or ending with bytes 5, 1 and four more): "+
				"ciphertexts of one kind could not be told from the other, so keys with it cannot be imported", staticB64)
		}
	}
	if s.Server.Region == "" {
		problem("[server] region is missing")
	}
	if len(s.KeyStores) == 0 {
		problem("no [[external_key_stores]]: nothing to migrate")
	}

	names := map[string]bool{}
	prefixes := map[string]int{}
	akids := map[string]int{}
	labels := map[string]int{}
	for i, ks := range s.KeyStores {
		n := i + 1
		where := fmt.Sprintf("[[external_key_stores]] #%d (uri_path_prefix %q)", n, ks.URIPathPrefix)
		if p := ks.URIPathPrefix; p != "" && (len(p) < 9 || len(p) > 117 || !samplePrefixPattern.MatchString(p)) {
			problem("%s: the prefix must be empty or 9-117 characters of /segments of a-z A-Z 0-9 - _", where)
		}
		if first, dup := prefixes[ks.URIPathPrefix]; dup {
			problem("%s: the same prefix as #%d", where, first)
		}
		prefixes[ks.URIPathPrefix] = n
		cred := fsm.Credential{AccessKeyID: ks.AccessKeyID, Secret: []byte(ks.Secret)}
		if err := cred.Validate(); err != nil {
			problem("%s: %v", where, err)
		}
		if first, dup := akids[ks.AccessKeyID]; dup {
			problem("%s: access key id %s is also #%d's; an access key id names one key store", where, ks.AccessKeyID, first)
		}
		akids[ks.AccessKeyID] = n
		if len(ks.KeyIDs) == 0 {
			warn("%s has no keys: its key store is created empty", where)
		}
		ids := append([]string(nil), ks.KeyIDs...)
		sort.Strings(ids)
		for _, id := range ids {
			k := fsm.Key{ID: id, Usage: fsm.DefaultUsage, CurrentVersion: 1, Versions: []fsm.KeyVersion{{Number: 1, HSMLabel: id}}}
			if err := k.Validate(); err != nil {
				problem("%s: %v", where, err)
			}
			if first, dup := labels[id]; dup {
				problem("%s: key %s is also in #%d; both would be the same HSM object, and here an HSM object is one version of one key (migrate one of them, re-create the other in KMS)", where, id, first)
			}
			labels[id] = n
		}
		st := plannedStore{Name: storeName(ks.URIPathPrefix, names), URIPath: ks.URIPathPrefix + "/kms/xks/v1",
			Region: s.Server.Region, AccessKeyID: ks.AccessKeyID, GrantsMode: grants, KeyIDs: ids,
			StaticMetadataB64: staticB64, secret: ks.Secret}
		plan.KeyStores = append(plan.KeyStores, st)
	}
	plan.NodeTOML = nodeTOMLLines(s)
	return plan
}

// storeName names a key store after its prefix ("/tenant/a" becomes
// "aws-tenant-a"; the empty prefix "aws-sample"), unique among names.
func storeName(prefix string, names map[string]bool) string {
	base := "aws-sample"
	if p := strings.Trim(prefix, "/"); p != "" {
		base = "aws-" + strings.ReplaceAll(p, "/", "-")
	}
	base = base[:min(len(base), 60)]
	name := base
	for i := 2; names[name]; i++ {
		name = fmt.Sprintf("%s-%d", base, i)
	}
	names[name] = true
	return name
}

// checkAgainstCluster adds the problems only the cluster can show: a name,
// URI path, access key id or HSM label already in use, a label some node's
// HSM lacks, and a cluster whose voters cannot yet read imported keys.
func checkAgainstCluster(ctx context.Context, c *admin.Client, plan *migrationPlan) error {
	problem := func(format string, a ...any) { plan.Problems = append(plan.Problems, fmt.Sprintf(format, a...)) }
	status, err := c.ClusterStatus(ctx)
	if err != nil {
		return err
	}
	if status.CommandSet < 3 {
		problem("the cluster is at command set %d; keys in another proxy's format need 3: upgrade every voter first (see Upgrading)", status.CommandSet)
	}
	stores, err := c.ListKeyStores(ctx)
	if err != nil {
		return err
	}
	adopted := map[string]string{}
	for _, existing := range stores {
		for i := range plan.KeyStores {
			p := &plan.KeyStores[i]
			if migratedEarlier(&existing, p) {
				p.Exists = true
				plan.Warnings = append(plan.Warnings, fmt.Sprintf("key store %s exists from an earlier run (same URI path, access key id and key mode); "+
					"its secret cannot be compared and is kept", p.Name))
				continue
			}
			if existing.Name == p.Name {
				problem("key store %s exists already", p.Name)
			}
			if existing.URIPath == p.URIPath {
				problem("URI path %s is already key store %s's", p.URIPath, existing.Name)
			}
			for _, cr := range existing.Credentials {
				if cr.AccessKeyID == p.AccessKeyID {
					problem("access key id %s is already a credential of key store %s", p.AccessKeyID, existing.Name)
				}
			}
		}
		keys, err := c.ListKeys(ctx, existing.Name)
		if err != nil {
			return err
		}
		for _, k := range keys {
			for _, v := range k.Versions {
				adopted[v.HSMLabel] = fmt.Sprintf("version %d of key %s/%s", v.Number, k.KeyStore, k.ID)
			}
			for i := range plan.KeyStores {
				p := &plan.KeyStores[i]
				if p.Exists && k.KeyStore == p.Name && k.Legacy != nil && len(k.Versions) > 0 && k.Versions[0].HSMLabel == k.ID {
					p.KeysDone = append(p.KeysDone, k.ID)
				}
			}
		}
	}
	var labels []string
	for _, p := range plan.KeyStores {
		for _, id := range p.KeyIDs {
			if slices.Contains(p.KeysDone, id) {
				continue
			}
			if what, ok := adopted[id]; ok {
				problem("HSM label %s is already %s", id, what)
			}
			labels = append(labels, id)
		}
	}
	if len(labels) == 0 {
		return nil
	}
	checks, err := c.CheckHSMLabels(ctx, labels)
	if err != nil {
		return err
	}
	for _, ch := range checks {
		if len(ch.MissingOn) > 0 {
			problem("HSM label %s is missing on %s: every node's HSM must hold the sample proxy's keys (the same HSM, or its replica) before they are adopted",
				ch.Label, strings.Join(ch.MissingOn, ", "))
		}
	}
	return nil
}

// carryOut creates the key stores and keys of plan, in order; it stops at
// the first refusal, saying what was already created.
func carryOut(ctx context.Context, c *admin.Client, plan *migrationPlan) error {
	for _, p := range plan.KeyStores {
		if !p.Exists {
			_, err := c.CreateKeyStore(ctx, admin.CreateKeyStoreRequest{Name: p.Name, URIPath: p.URIPath, Region: p.Region,
				GrantsMode: p.GrantsMode, KeyMode: string(fsm.KeyModeShared),
				Credential: &admin.ImportedCredential{AccessKeyID: p.AccessKeyID, SecretAccessKey: p.secret}})
			if err != nil {
				return fmt.Errorf("creating key store %s (already created: %s): %w", p.Name, createdSoFar(plan), err)
			}
			plan.Created = append(plan.Created, "key store "+p.Name)
		}
		for _, id := range p.KeyIDs {
			if slices.Contains(p.KeysDone, id) {
				continue
			}
			k, err := c.CreateKey(ctx, p.Name, admin.CreateKeyRequest{ID: id, HSMLabel: id,
				Legacy: &admin.LegacyFormat{Format: fsm.LegacyFormatAWSSample, StaticMetadataB64: p.StaticMetadataB64}})
			if err != nil {
				return fmt.Errorf("adopting key %s/%s (already created: %s): %w", p.Name, id, createdSoFar(plan), err)
			}
			plan.Created = append(plan.Created, "key "+p.Name+"/"+id)
			plan.Confirm = append(plan.Confirm, k.Confirmation)
		}
	}
	return nil
}

func createdSoFar(plan *migrationPlan) string {
	if len(plan.Created) == 0 {
		return "nothing"
	}
	return strings.Join(plan.Created, ", ")
}

// nodeTOMLLines is the part of every node's node.toml that the sample
// proxy's settings decide: TLS, mTLS and the HSM module. They are per node,
// never replicated. The PIN goes in a file named by pin_file, never here.
func nodeTOMLLines(s *awsSampleSettings) string {
	var b strings.Builder
	b.WriteString("# node.toml of every node: the settings the sample proxy had (paths are as its settings.toml gave them,\n")
	b.WriteString("# relative to its working directory). The SigV4 secret is in the cluster's state, not here.\n[api]\n")
	if s.TLS != nil && s.Security.TLS {
		fmt.Fprintf(&b, "tls_cert_file = %q\ntls_key_file = %q\n", s.TLS.CertPEM, s.TLS.KeyPEM)
	} else {
		b.WriteString("# the sample proxy served without TLS; AWS KMS needs it: set tls_cert_file and tls_key_file\n")
	}
	if s.TLS != nil && s.Security.MTLS {
		fmt.Fprintf(&b, "mtls_client_ca_file = %q\n", s.TLS.MTLSClientCAPEM)
		if s.TLS.MTLSClientDNSName != "" {
			b.WriteString("# the sample proxy matched this name against the client certificate's DNS names; this proxy pins the\n")
			b.WriteString("# subject common name instead: check it against AWS KMS's client certificate (README, Using it with AWS KMS)\n")
			fmt.Fprintf(&b, "mtls_client_subject_cn = %q\n", s.TLS.MTLSClientDNSName)
		}
	}
	// The sample proxy bounds the base64 text, this proxy the bytes; only
	// a larger bound than ours needs a line, or requests the old proxy
	// served would be refused.
	if n := s.Limits.MaxPlaintextB64 / 4 * 3; n > xksapi.DefaultLimits.MaxPlaintext {
		fmt.Fprintf(&b, "max_plaintext_bytes = %d  # the sample proxy's max_plaintext_in_base64 = %d\n", n, s.Limits.MaxPlaintextB64)
	}
	if n := s.Limits.MaxAADB64 / 4 * 3; n > xksapi.DefaultLimits.MaxAAD {
		fmt.Fprintf(&b, "max_aad_bytes = %d  # the sample proxy's max_aad_in_base64 = %d\n", n, s.Limits.MaxAADB64)
	}
	b.WriteString("[hsm]\n")
	module := s.PKCS11.Module
	if s.PKCS11Logger != nil && s.PKCS11Logger.Library != "" {
		b.WriteString("# the sample proxy loaded pkcs11-logger; this is the library it wrapped\n")
		module = s.PKCS11Logger.Library
	}
	fmt.Fprintf(&b, "module = %q  # unless PKCS11_HSM_MODULE overrode it in the sample proxy's environment\n", module)
	b.WriteString("token_label = \"\"  # the label of the token holding the keys\n")
	b.WriteString("pin_file = \"/etc/xksproxy/hsm-pin\"  # holds the sample proxy's [pkcs11] user_pin, mode 0600; never printed here\n")
	return b.String()
}

func printPlan(p *migrationPlan, dryRun bool) {
	if p == nil {
		return
	}
	fmt.Printf("Migration from AWS's sample proxy (%s):\n", p.Settings)
	for _, ks := range p.KeyStores {
		fmt.Printf("  key store %s: URI path %s, region %s, access key id %s (its secret as configured), shared HSM keys, grants %s\n",
			ks.Name, ks.URIPath, ks.Region, ks.AccessKeyID, ks.GrantsMode)
		if ks.Exists {
			fmt.Printf("    (created by an earlier run; keys already adopted: %s)\n", strings.Join(append([]string{}, ks.KeysDone...), ", "))
		}
		for _, id := range ks.KeyIDs {
			md := "no static metadata"
			if ks.StaticMetadataB64 != "" {
				md = "static metadata " + ks.StaticMetadataB64
			}
			fmt.Printf("    key %s: HSM label %s, decrypts the sample proxy's ciphertexts (%s)\n", id, id, md)
		}
	}
	for _, w := range p.Warnings {
		fmt.Printf("WARNING: %s\n", w)
	}
	for _, pr := range p.Problems {
		fmt.Printf("PROBLEM: %s\n", pr)
	}
	switch {
	case len(p.Problems) > 0:
		fmt.Println("Nothing was changed.")
	case dryRun:
		fmt.Println("Dry run: nothing was changed. Run again without --dry-run to migrate.")
	default:
		for _, c := range p.Created {
			fmt.Printf("created %s\n", c)
		}
	}
	fmt.Printf("\n%s", p.NodeTOML)
}
