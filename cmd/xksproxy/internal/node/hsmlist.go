package node

import (
	"fmt"
	"sort"

	"github.com/BurntSushi/toml"
)

// HSMs are the node's HSMs: [hsm], or every entry of [[hsm]] in order.
func (c *Config) HSMs() []*HSMConfig {
	out := []*HSMConfig{&c.HSM}
	for i := range c.HSM.More {
		out = append(out, &c.HSM.More[i])
	}
	return out
}

// hsmFields is HSMConfig without its UnmarshalTOML, to decode one table.
type hsmFields HSMConfig

// UnmarshalTOML accepts both forms: one [hsm] table, as every existing
// configuration has, or an [[hsm]] array of tables listing several HSMs,
// the first of which fills HSMConfig and the rest More. Unknown keys are
// refused as they are elsewhere in the file.
func (h *HSMConfig) UnmarshalTOML(v any) error {
	var tables []map[string]any
	switch t := v.(type) {
	case map[string]any:
		tables = []map[string]any{t}
	case []map[string]any:
		tables = t
	default:
		return fmt.Errorf("hsm must be a table ([hsm]) or an array of tables ([[hsm]])")
	}
	if len(tables) == 0 {
		return fmt.Errorf("[[hsm]] lists no HSM")
	}
	decoded := make([]HSMConfig, len(tables))
	for i, table := range tables {
		text, err := toml.Marshal(table)
		if err != nil {
			return fmt.Errorf("hsm %d: %w", i+1, err)
		}
		var f hsmFields
		md, err := toml.Decode(string(text), &f)
		if err != nil {
			return fmt.Errorf("hsm %d: %w", i+1, err)
		}
		if undecoded := md.Undecoded(); len(undecoded) > 0 {
			keys := make([]string, len(undecoded))
			for j, k := range undecoded {
				keys[j] = "hsm." + k.String()
			}
			sort.Strings(keys)
			return fmt.Errorf("hsm %d: unknown keys %v", i+1, keys)
		}
		decoded[i] = HSMConfig(f)
	}
	*h = decoded[0]
	// More stays nil for a single HSM, so that a configuration read back
	// equals the one written (devenv compares them with reflect.DeepEqual).
	if len(decoded) > 1 {
		h.More = decoded[1:]
	}
	return nil
}
