package admin

import "time"

// The admin API's JSON shapes. The CLI's --json output is these documents
// unchanged, and scripts depend on them: fields are only ever added.

// KeyStoreInfo describes a key store without its secrets.
type KeyStoreInfo struct {
	Name        string           `json:"name"`
	URIPath     string           `json:"uriPath"`
	Region      string           `json:"region"`
	Enabled     bool             `json:"enabled"`
	QuotaRPS    int              `json:"quotaRps"`
	GrantsMode  string           `json:"grantsMode"`
	KeyMode     string           `json:"keyMode"`
	Credentials []CredentialInfo `json:"credentials"`
	Keys        int              `json:"keys"`
}

// CredentialInfo describes a SigV4 credential; the secret is never listed.
type CredentialInfo struct {
	AccessKeyID string     `json:"accessKeyId"`
	CreatedAt   time.Time  `json:"createdAt"`
	ExpiresAt   *time.Time `json:"expiresAt,omitempty"`
	Expired     bool       `json:"expired"`
}

// NewCredential is the one answer that carries a secret: at creation.
type NewCredential struct {
	KeyStore        string         `json:"keyStore"`
	AccessKeyID     string         `json:"accessKeyId"`
	SecretAccessKey string         `json:"secretAccessKey"`
	ExpiresAt       *time.Time     `json:"expiresAt,omitempty"`
	KMSConsole      KMSConsoleFile `json:"kmsConsole"`
}

// KMSConsoleFile is the AWS KMS console's proxy configuration file.
type KMSConsoleFile struct {
	XksProxyURIPath string `json:"XksProxyUriPath"`
	Credential      struct {
		AccessKeyID        string `json:"AccessKeyId"`
		RawSecretAccessKey string `json:"RawSecretAccessKey"`
	} `json:"XksProxyAuthenticationCredential"`
}

// KeyInfo describes a key and its versions.
type KeyInfo struct {
	KeyStore       string        `json:"keyStore"`
	ID             string        `json:"id"`
	Usage          []string      `json:"usage"`
	Enabled        bool          `json:"enabled"`
	CurrentVersion uint32        `json:"currentVersion"`
	Versions       []VersionInfo `json:"versions"`
	CreatedAt      time.Time     `json:"createdAt"`
	DeletionDate   *time.Time    `json:"deletionDate,omitempty"`
	Deleted        bool          `json:"deleted,omitempty"`
	// Legacy: the key was imported from another proxy, whose ciphertexts
	// it keeps decrypting.
	Legacy *LegacyFormat `json:"legacy,omitempty"`
	// Confirmation answers key create: which nodes serve the new key.
	Confirmation *Change `json:"confirmation,omitempty"`
}

// ScheduleDeletionRequest schedules a disabled key's deletion.
type ScheduleDeletionRequest struct {
	Days int `json:"days"`
}

// VersionInfo is one version of a key's material.
type VersionInfo struct {
	Number    uint32    `json:"number"`
	HSMLabel  string    `json:"hsmLabel"`
	Wrapped   bool      `json:"replicatedMaterial"`
	CreatedAt time.Time `json:"createdAt"`
}

// GrantInfo is who may use a key, and for what.
type GrantInfo struct {
	ID          string   `json:"id"`
	KeyStore    string   `json:"keyStore"`
	KeyID       string   `json:"keyId"`
	Principals  []string `json:"principals"`
	Accounts    []string `json:"accounts,omitempty"`
	Regions     []string `json:"regions,omitempty"`
	ViaServices []string `json:"viaServices,omitempty"`
	SourceVPCs  []string `json:"sourceVpcs,omitempty"`
	SourceVPCEs []string `json:"sourceVpces,omitempty"`
	Operations  []string `json:"operations"`
	// Confirmation answers grant add: which nodes enforce the grant.
	Confirmation *Change `json:"confirmation,omitempty"`
}

// Change answers a write: its Raft index and, for changes that must take
// effect everywhere (disable, enable, revoke), each node's confirmation.
type Change struct {
	Index     uint64 `json:"index"`
	Acks      []Ack  `json:"acks,omitempty"`
	Confirmed int    `json:"confirmed"`
	Nodes     int    `json:"nodes"`
	Elapsed   string `json:"elapsed,omitempty"`
}

// ConfirmedEverywhere: every node serves the change. A committed change
// that some node has not confirmed is still enforced by every node that
// serves at all: the others stop serving by their staleness limit.
func (c Change) ConfirmedEverywhere() bool { return c.Confirmed == c.Nodes }

// Ack is one node's confirmation that it serves a committed change.
type Ack struct {
	Node      string        `json:"node"`
	Confirmed bool          `json:"confirmed"`
	After     time.Duration `json:"afterNanos"`
	Error     string        `json:"error,omitempty"`
	// StopsServingBy, for a node that did not confirm, is the latest time
	// at which it stops serving crypto by itself unless it hears from the
	// leader (and so learns of the change): its staleness limit.
	StopsServingBy time.Time `json:"stopsServingBy,omitzero"`
}

// BackupInfo is `snapshot inspect`: a backup file described without
// restoring it.
type BackupInfo struct {
	ClusterID     string     `json:"clusterId,omitempty"` // of the cluster that saved it
	ThisClusterID string     `json:"thisClusterId"`       // of the cluster asked
	SavedAt       *time.Time `json:"savedAt,omitempty"`
	SavedBy       string     `json:"savedBy,omitempty"`
	// MAC: "verified" (this cluster's HSMs made it for this content),
	// "failed" (modified, or another cluster's), "absent" (a backup of an
	// older version), "unchecked" (the HSM could not answer).
	MAC string `json:"mac"`
	// Valid: the state obeys every rule this version restores with; the
	// counts are known only then.
	Valid       bool   `json:"valid"`
	Index       uint64 `json:"index"`
	KeyStores   int    `json:"keyStores"`
	Credentials int    `json:"credentials"`
	Keys        int    `json:"keys"`
	DeletedKeys int    `json:"deletedKeys"`
	Grants      int    `json:"grants"`
	// Restorable: valid and verified, so `snapshot restore` takes it.
	Restorable bool   `json:"restorable"`
	Problem    string `json:"problem,omitempty"` // the first reason it is not restorable
}

// ClusterStatus is `cluster status`: the leader (null during an election)
// and every voter as it reports itself.
type ClusterStatus struct {
	// CommandSet is the cluster's command set in effect: what every voter's
	// build reads (see Upgrading in the README).
	CommandSet int           `json:"commandSet"`
	Leader     *LeaderInfo   `json:"leader"`
	Nodes      []NodeStatus  `json:"nodes"`
	Fleet      []FleetStatus `json:"fleet,omitempty"`
}

// NodeStatus is what a node says of itself (cluster.NodeStatus, as the
// admin API answers it).
type NodeStatus struct {
	ID           string   `json:"id"`
	ClusterAddr  string   `json:"clusterAddress"`
	APIAddr      string   `json:"apiAddress"`
	State        string   `json:"raftState"`
	AppliedIndex uint64   `json:"appliedIndex"`
	CommitIndex  uint64   `json:"commitIndex"`
	ViewIndex    uint64   `json:"viewIndex"`
	LeaderIndex  uint64   `json:"leaderIndex,omitempty"` // the leader's index as last learned; viewIndex must reach it
	Ready        bool     `json:"ready"`
	NotReady     string   `json:"notReadyReason,omitempty"`
	HSM          string   `json:"hsmStatus"`
	LastContact  string   `json:"lastLeaderContact,omitempty"`
	KeysMissing  []string `json:"keysMissing,omitempty"`
	// KeysMissingDetail is KeysMissing as structures, for programs.
	KeysMissingDetail []MissingVersion `json:"keysMissingDetail,omitempty"`
	// ReconciledIndex: this node's HSM matches the state at this index
	// (KeysMissing lists what it could not make match).
	ReconciledIndex uint64 `json:"reconciledIndex"`
	// AddressMismatch: the stored Raft configuration names this node at an
	// address it no longer advertises.
	AddressMismatch string `json:"addressMismatch,omitempty"`
	// Version and CommandSet describe the node's build; builds from before
	// they were reported leave them out.
	Version    string    `json:"version,omitempty"`
	CommandSet int       `json:"commandSet,omitempty"`
	Time       time.Time `json:"time"`
}

// MissingVersion is a key version a node's HSM does not hold, and why.
type MissingVersion struct {
	KeyStore string `json:"keyStore"`
	KeyID    string `json:"keyId"`
	Version  uint32 `json:"version"`
	Reason   string `json:"reason"`
}

// FleetStatus is one gossip member as the answering node last heard of it.
type FleetStatus struct {
	ID           string `json:"id"`
	State        string `json:"state"` // alive, dead or left
	APIAddr      string `json:"apiAddress"`
	HSMStatus    string `json:"hsmStatus"`
	Ready        bool   `json:"ready"`
	AppliedIndex uint64 `json:"appliedIndex"`
	KeysReady    int    `json:"keysReady"`
}

// LeaderInfo names the leader and where its XKS API listens (host:port).
type LeaderInfo struct {
	ID          string `json:"id"`
	APIAddress  string `json:"apiAddress"`
	ClusterAddr string `json:"clusterAddress"`
}

// APIError is the admin API's refusal.
type APIError struct {
	Error string `json:"error"`
}

// CreateKeyStoreRequest creates a key store; its first credential comes back
// in the answer.
type CreateKeyStoreRequest struct {
	Name       string `json:"name"`
	URIPath    string `json:"uriPath"`
	Region     string `json:"region"`
	QuotaRPS   int    `json:"quotaRps"`
	GrantsMode string `json:"grantsMode"` // "closed" (default) or "open"
	KeyMode    string `json:"keyMode"`    // "replicated" (default) or "shared"
	// Credential, when set, is the key store's first credential as another
	// proxy already has it (a migration: AWS KMS keeps its configuration);
	// otherwise one is generated. An imported secret is never answered.
	Credential *ImportedCredential `json:"credential,omitempty"`
}

// ImportedCredential is a SigV4 credential that exists already.
type ImportedCredential struct {
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
}

// CreateKeyStoreResponse is the new key store and its first credential.
type CreateKeyStoreResponse struct {
	KeyStore   KeyStoreInfo  `json:"keyStore"`
	Credential NewCredential `json:"credential"`
}

// AddCredentialRequest adds a credential; ExpiresAt nil means never.
type AddCredentialRequest struct {
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
}

// CreateKeyRequest creates a key. In replicated mode the material is
// generated and replicated; HSMLabel adopts an object every HSM already has.
type CreateKeyRequest struct {
	ID       string   `json:"id"`
	Usage    []string `json:"usage,omitempty"`
	HSMLabel string   `json:"hsmLabel,omitempty"`
	// Legacy, with HSMLabel in a shared key store, adopts a key another
	// proxy used, so that its ciphertexts keep decrypting.
	Legacy *LegacyFormat `json:"legacy,omitempty"`
}

// LegacyFormat is the ciphertext format of the proxy a key was imported
// from. Format "aws-kms-xks-proxy" is AWS's sample proxy.
type LegacyFormat struct {
	Format string `json:"format"`
	// Version is the key version that made those ciphertexts (always 1 at
	// creation; answered, not asked).
	Version uint32 `json:"version,omitempty"`
	// StaticMetadataB64 is that proxy's ciphertext_metadata_b64: the
	// ciphertextMetadata it returned with every Encrypt.
	StaticMetadataB64 string `json:"staticMetadataB64,omitempty"`
}

// RotateKeyRequest rotates a key. In a shared key store the new version
// adopts HSMLabel, which every node's HSM must already hold; in a
// replicated one the cluster generates it and HSMLabel stays empty.
type RotateKeyRequest struct {
	HSMLabel string `json:"hsmLabel,omitempty"`
}

// HSMLabelsRequest asks which nodes' HSMs lack some labels.
type HSMLabelsRequest struct {
	Labels []string `json:"labels"`
}

// HSMLabelCheck is one label and the reachable voters whose HSM does not
// hold it (or cannot tell).
type HSMLabelCheck struct {
	Label     string   `json:"label"`
	MissingOn []string `json:"missingOn"`
}

// MembershipRequest names a node to join or remove.
type MembershipRequest struct {
	ID      string `json:"id"`
	Address string `json:"address,omitempty"`
}
