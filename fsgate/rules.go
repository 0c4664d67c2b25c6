package main

import (
	"strings"
)

// Rule: the first rule whose op and glob match decides; no match allows.
type Rule struct {
	Action string   `json:"action"` // allow | block
	Ops    []string `json:"ops"`    // empty = every op
	Path   string   `json:"path"`   // absolute glob in the sandbox's view: * ? within a component, ** across
}

type Config struct {
	Source string   `json:"source"`
	Mount  string   `json:"mount"`
	Prefix string   `json:"prefix"` // where the sandbox sees the mount (rules and events use its paths)
	Socket string   `json:"socket"`
	Rules  []Rule   `json:"rules"`
	Events []string `json:"events"` // path prefixes whose operations are reported
	// Events per second and burst the gate sends; the rest are counted as dropped.
	Rate  int `json:"rate"`
	Burst int `json:"burst"`
}

func (r *Rule) hasOp(op string) bool {
	if len(r.Ops) == 0 {
		return true
	}
	for _, o := range r.Ops {
		if o == op || o == "*" {
			return true
		}
	}
	return false
}

// blocked says whether op on the sandbox path p is refused.
func blocked(rules []Rule, op, p string) bool {
	for i := range rules {
		if rules[i].hasOp(op) && globMatch(rules[i].Path, p) {
			return rules[i].Action == "block"
		}
	}
	return false
}

// globMatch: `**` matches any number of components (zero included), `*` any run within one component,
// `?` one character. Components are matched one by one, so the cost is bounded by the (validated) sizes.
func globMatch(pattern, p string) bool {
	return matchParts(strings.Split(strings.Trim(pattern, "/"), "/"), strings.Split(strings.Trim(p, "/"), "/"), 0)
}

func matchParts(pat, parts []string, depth int) bool {
	if depth > 64 {
		return false
	}
	for len(pat) > 0 {
		if pat[0] == "**" {
			for len(pat) > 0 && pat[0] == "**" {
				pat = pat[1:]
			}
			if len(pat) == 0 {
				return true
			}
			for i := 0; i <= len(parts); i++ {
				if matchParts(pat, parts[i:], depth+1) {
					return true
				}
			}
			return false
		}
		if len(parts) == 0 || !matchComponent(pat[0], parts[0]) {
			return false
		}
		pat, parts = pat[1:], parts[1:]
	}
	return len(parts) == 0
}

// matchComponent: iterative * and ? matching (linear backtracking, no recursion).
func matchComponent(pat, s string) bool {
	pi, si, star, mark := 0, 0, -1, 0
	for si < len(s) {
		if pi < len(pat) && (pat[pi] == '?' || pat[pi] == s[si]) {
			pi++
			si++
		} else if pi < len(pat) && pat[pi] == '*' {
			star, mark = pi, si
			pi++
		} else if star >= 0 {
			pi = star + 1
			mark++
			si = mark
		} else {
			return false
		}
	}
	for pi < len(pat) && pat[pi] == '*' {
		pi++
	}
	return pi == len(pat)
}

// reported: the path lies under one of the event prefixes.
func reported(prefixes []string, p string) bool {
	for _, e := range prefixes {
		e = strings.TrimRight(e, "/")
		if e == "" || p == e || strings.HasPrefix(p, e+"/") {
			return true
		}
	}
	return false
}
