package admin

import (
	"encoding/json"
	"reflect"
	"strings"
	"time"
)

// Document is the admin API as an OpenAPI 3 document, generated from the
// route table and the request and response types, so that it cannot drift
// from what the server serves and the client calls.
func Document() map[string]any {
	g := &schemas{defs: map[string]any{}}
	paths := map[string]map[string]any{}
	for _, r := range Routes {
		op := map[string]any{"operationId": r.Name, "summary": r.Summary, "x-xksproxy-role": string(r.Role),
			"description": "Needs an operator of role " + string(r.Role) + " or above (reader < killswitch < operator < admin)."}
		var params []any
		for _, seg := range strings.Split(r.Pattern, "/") {
			if name, ok := strings.CutPrefix(seg, "{"); ok {
				params = append(params, map[string]any{"name": strings.TrimSuffix(name, "}"), "in": "path", "required": true,
					"schema": map[string]any{"type": "string"}})
			}
		}
		for _, q := range r.Query {
			params = append(params, map[string]any{"name": q, "in": "query", "schema": map[string]any{"type": "string"}})
		}
		if r.Stale {
			params = append(params, map[string]any{"name": StaleParam, "in": "query", "schema": map[string]any{"type": "boolean"},
				"description": "answer from this node's state as it is, without asking the leader (and without one)"})
		}
		if params != nil {
			op["parameters"] = params
		}
		switch {
		case r.Octets && r.Method == "POST":
			op["requestBody"] = map[string]any{"required": true,
				"content": map[string]any{"application/octet-stream": map[string]any{"schema": map[string]any{"type": "string", "format": "binary"}}}}
		case r.Request != nil:
			op["requestBody"] = map[string]any{"content": map[string]any{"application/json": map[string]any{"schema": g.of(reflect.TypeOf(r.Request))}}}
		}
		ok := map[string]any{"description": "OK"}
		switch {
		case r.Response != nil:
			ok["content"] = map[string]any{"application/json": map[string]any{"schema": g.of(reflect.TypeOf(r.Response))}}
		case r.Octets:
			ok["content"] = map[string]any{"application/octet-stream": map[string]any{"schema": map[string]any{"type": "string", "format": "binary"}}}
		}
		refused := map[string]any{"description": "refused", "content": map[string]any{"application/json": map[string]any{"schema": g.of(reflect.TypeOf(APIError{}))}}}
		if r.StatesFreshness() {
			ok["headers"], refused["headers"] = freshnessHeaders(), freshnessHeaders()
		}
		op["responses"] = map[string]any{"200": ok, "default": refused}
		if paths[r.Pattern] == nil {
			paths[r.Pattern] = map[string]any{}
		}
		paths[r.Pattern][strings.ToLower(r.Method)] = op
	}
	return map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{"title": "xksproxy admin API", "version": "1",
			"description": "The operator API of an xksproxy node. JSON fields are only ever added."},
		"security":   []any{map[string]any{"bearer": []any{}}},
		"paths":      paths,
		"components": map[string]any{"schemas": g.defs, "securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}}},
	}
}

// freshnessHeaders describes AppliedIndexHeader and LeaderContactAgeHeader.
func freshnessHeaders() map[string]any {
	integer := map[string]any{"type": "integer", "format": "int64", "minimum": 0}
	return map[string]any{
		AppliedIndexHeader: map[string]any{"schema": integer,
			"description": "the index of the last command the node had applied when it read the state: the answer holds every change up to it"},
		LeaderContactAgeHeader: map[string]any{"schema": integer,
			"description": "milliseconds since the node last heard from the leader (0 on the leader)"},
	}
}

// DocumentJSON is Document, encoded.
func DocumentJSON() []byte {
	b, err := json.MarshalIndent(Document(), "", "  ")
	if err != nil {
		panic(err) // maps of strings, slices and bools always encode
	}
	return b
}

// schemas turns Go types into JSON Schema, named structs into components.
type schemas struct{ defs map[string]any }

var (
	timeType = reflect.TypeOf(time.Time{})
	rawType  = reflect.TypeOf(json.RawMessage{})
)

func (g *schemas) of(t reflect.Type) map[string]any {
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t == rawType:
		return map[string]any{"description": "any JSON value"}
	case t.Kind() == reflect.Pointer:
		s := g.of(t.Elem())
		if _, ref := s["$ref"]; ref {
			return map[string]any{"allOf": []any{s}, "nullable": true}
		}
		s["nullable"] = true
		return s
	case t.Kind() == reflect.Slice:
		return map[string]any{"type": "array", "items": g.of(t.Elem())}
	case t.Kind() == reflect.String:
		return map[string]any{"type": "string"}
	case t.Kind() == reflect.Bool:
		return map[string]any{"type": "boolean"}
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return map[string]any{"type": "integer"}
	case t.Kind() == reflect.Struct:
		if t.Name() != "" {
			if _, done := g.defs[t.Name()]; !done {
				g.defs[t.Name()] = map[string]any{} // a placeholder ends recursion
				g.defs[t.Name()] = g.object(t)
			}
			return map[string]any{"$ref": "#/components/schemas/" + t.Name()}
		}
		return g.object(t)
	}
	panic("admin: no schema for " + t.String())
}

func (g *schemas) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		props[name] = g.of(f.Type)
	}
	return map[string]any{"type": "object", "properties": props}
}
