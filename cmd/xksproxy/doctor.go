package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/xksproxy/xksproxy/cmd/xksproxy/internal/doctor"
	"github.com/xksproxy/xksproxy/xksclient"
)

type doctorOptions struct {
	endpoint, clientFile, accessKeyID, secretFile, region string
	ca, trustedRoots, clientCert, clientKey               string
	timeout                                               time.Duration
	json                                                  bool
}

func doctorCommand() *cobra.Command {
	o := &doctorOptions{}
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check an XKS endpoint as AWS KMS will, before ConnectCustomKeyStore or after a connection error",
		Long: `doctor checks an XKS proxy endpoint from the outside, as AWS KMS does when it
connects an external key store: TLS 1.2 or 1.3, the full certificate chain, its
validity and host name, its root on AWS's list of trusted CAs, port 443, IPv4,
the URI path, a SigV4-signed GetHealthStatus with the credential, the answer,
latency and clock skew. Each failure names the connection error code KMS would
report (XKS_PROXY_INVALID_TLS_CONFIGURATION, INVALID_CREDENTIALS, ...) and the fix.

The endpoint is --endpoint https://host[:port][/prefix] (the key store's URI
path is the prefix + /kms/xks/v1) or client.json's (--client FILE, which also
gives the credential and its CA). The secret never goes on the command line:
--secret-file FILE, else $XKSPROXY_SECRET_ACCESS_KEY. Exit status 0 when no
check fails (warnings allowed), 1 otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := o.options()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 4*opts.Timeout+10*time.Second)
			defer cancel()
			rep := doctor.Run(ctx, opts)
			if o.json {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				printDoctorReport(cmd.OutOrStdout(), rep)
			}
			if rep.Failed > 0 {
				return fmt.Errorf("%d check(s) failed: AWS KMS would not connect to this endpoint", rep.Failed)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.endpoint, "endpoint", "", "https://host[:port][/prefix]: the XksProxyUriEndpoint, and the URI path's prefix (default: client.json's)")
	f.StringVar(&o.clientFile, "client", "", "client.json (xksproxy dev writes it): endpoint, URI path, credential, region and CA")
	f.StringVar(&o.accessKeyID, "access-key-id", "", "the credential's access key id (default $XKSPROXY_ACCESS_KEY_ID, or client.json's)")
	f.StringVar(&o.secretFile, "secret-file", "", "file holding the credential's secret (default $XKSPROXY_SECRET_ACCESS_KEY, or client.json's)")
	f.StringVar(&o.region, "region", "", "the key store's AWS region, which KMS signs with (default client.json's, else us-east-1)")
	f.StringVar(&o.ca, "ca", "", "PEM certificates to trust besides the system's roots (a private CA, for testing; default client.json's caCertFile)")
	f.StringVar(&o.trustedRoots, "trusted-roots", "", "replace AWS's built-in list of trusted roots: PEM certificates, or lines of alias<TAB>sha256 (the built-in format)")
	f.StringVar(&o.clientCert, "client-cert", "", "PEM client certificate to present when the proxy requires mutual TLS")
	f.StringVar(&o.clientKey, "client-key", "", "the key of --client-cert")
	f.DurationVar(&o.timeout, "timeout", 5*time.Second, "how long each network step may take before it counts as failed")
	f.BoolVar(&o.json, "json", false, "print the report as JSON (its shape: README, Operations, Preflight)")
	return cmd
}

// options gathers doctor.Options from the flags, client.json and the
// environment.
func (o *doctorOptions) options() (doctor.Options, error) {
	var cf xksclient.ClientFile
	if o.clientFile != "" {
		var err error
		if cf, err = xksclient.LoadClientFile(o.clientFile); err != nil {
			return doctor.Options{}, err
		}
	}
	endpoint, uriPath := cf.Endpoint, cf.URIPath
	if o.endpoint != "" {
		u, err := url.Parse(o.endpoint)
		if err != nil {
			return doctor.Options{}, fmt.Errorf("--endpoint: %w", err)
		}
		endpoint = (&url.URL{Scheme: u.Scheme, Host: u.Host}).String()
		if p := strings.TrimSuffix(u.Path, "/"); p != "" || uriPath == "" {
			uriPath = strings.TrimSuffix(p, "/kms/xks/v1") + "/kms/xks/v1"
		}
	}
	if endpoint == "" {
		return doctor.Options{}, errors.New("no endpoint: give --endpoint https://host[:port][/prefix] or --client client.json")
	}
	creds := xksclient.Credentials{
		AccessKeyID: firstNonEmpty(o.accessKeyID, os.Getenv("XKSPROXY_ACCESS_KEY_ID"), cf.AccessKeyID),
		Secret:      firstNonEmpty(os.Getenv("XKSPROXY_SECRET_ACCESS_KEY"), cf.SecretAccessKey),
		Region:      firstNonEmpty(o.region, cf.Region, "us-east-1"),
	}
	if o.secretFile != "" {
		b, err := os.ReadFile(o.secretFile)
		if err != nil {
			return doctor.Options{}, fmt.Errorf("--secret-file: %w", err)
		}
		creds.Secret = strings.TrimSpace(string(b))
	}
	if (creds.AccessKeyID == "") != (creds.Secret == "") {
		return doctor.Options{}, errors.New("a credential needs both its access key id (--access-key-id) and its secret (--secret-file or $XKSPROXY_SECRET_ACCESS_KEY)")
	}
	opts := doctor.Options{Endpoint: endpoint, URIPath: uriPath, Creds: creds, CAFile: firstNonEmpty(o.ca, cf.CACertFile), Timeout: o.timeout}
	if o.trustedRoots != "" {
		roots, err := doctor.LoadTrustedRoots(o.trustedRoots)
		if err != nil {
			return doctor.Options{}, fmt.Errorf("--trusted-roots: %w", err)
		}
		opts.TrustedRoots = roots
	}
	if (o.clientCert == "") != (o.clientKey == "") {
		return doctor.Options{}, errors.New("--client-cert and --client-key go together")
	}
	if o.clientCert != "" {
		c, err := tls.LoadX509KeyPair(o.clientCert, o.clientKey)
		if err != nil {
			return doctor.Options{}, fmt.Errorf("client certificate: %w", err)
		}
		opts.ClientCert = &c
	}
	return opts, nil
}

// printDoctorReport prints one line per check, and under each that is not
// a pass, the KMS error and the fix.
func printDoctorReport(w io.Writer, rep *doctor.Report) {
	fmt.Fprintf(w, "xksproxy doctor: %s%s", rep.Endpoint, rep.URIPath)
	if rep.Address != "" {
		fmt.Fprintf(w, " (%s)", rep.Address)
	}
	fmt.Fprintf(w, "\ntrusted roots: %s\n\n", rep.TrustedRoots)
	for _, c := range rep.Checks {
		fmt.Fprintf(w, "%-5s %-21s %s\n", strings.ToUpper(string(c.Status)), c.Name, c.Detail)
		if c.KMSError != "" {
			fmt.Fprintf(w, "%27s KMS reports: %s\n", "", c.KMSError)
		}
		if c.Fix != "" {
			fmt.Fprintf(w, "%27s fix: %s\n", "", c.Fix)
		}
	}
	fmt.Fprintf(w, "\n%d failed, %d warning(s)\n", rep.Failed, rep.Warnings)
}
