package cluster

// Check loads the files as Start would (the CA, the certificate and its
// key), so that a configuration check fails where a start would.
func (f TLSFiles) Check() error {
	_, err := f.load()
	return err
}
