package cluster

// Check loads the files as Start would (the CA, the certificate and its
// key, which must name nodeID), so that a configuration check fails where
// a start would.
func (f TLSFiles) Check(nodeID string) error {
	_, err := f.load(nodeID)
	return err
}
