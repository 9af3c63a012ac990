package vne

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/vnsnap/vnsnap/core"
)

// decoder walks the yaml.Node tree by hand rather than through
// yaml.Unmarshal into structs, because only the node tree knows the line of
// every field, and because it lets one pass report every problem instead of
// stopping at the first.
type decoder struct {
	v       *VNE
	baseDir string
	errs    []*Error
	// fatal is set when the file cannot be decoded at all (bad YAML), so
	// there is nothing to validate.
	fatal bool
}

// field decodes the value of one mapping key, whose path is path.
type field func(n *yaml.Node, path string)

func (d *decoder) errorf(line int, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.v.File, Line: line, Field: path, Msg: fmt.Sprintf(format, args...)})
	d.v.bad[path] = true
}

// yamlLine pulls the line out of a yaml.v3 syntax error
// ("yaml: line 3: found a tab character ...").
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (d *decoder) decode(data []byte) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		d.fatal = true
		msg := err.Error()
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			if strings.Contains(m[2], "tab") {
				// yaml.v3 names the line before the tab; find the tab.
				line = tabLine(data, line)
			}
			d.errorf(line, "", "invalid YAML: %s", m[2])
			return
		}
		d.errorf(0, "", "invalid YAML: %s", strings.TrimPrefix(msg, "yaml: "))
		return
	}
	if len(doc.Content) == 0 {
		d.fatal = true
		d.errorf(0, "", "empty file (want a mapping with name, hosts and vms)")
		return
	}
	root := resolve(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		d.fatal = true
		d.errorf(root.Line, "", "want a mapping with name, hosts and vms, got %s", kindName(root))
		return
	}
	v := d.v
	d.fields(root, "", map[string]field{
		"name": func(n *yaml.Node, p string) { v.Name, _ = d.str(n, p) },
		"algorithm": func(n *yaml.Node, p string) {
			if s, ok := d.str(n, p); ok {
				a, err := core.ParseAlgorithm(s)
				if err != nil {
					d.errorf(n.Line, p, "%v", err)
					return
				}
				v.Algorithm = &a
			}
		},
		"sink": func(n *yaml.Node, p string) {
			if s, ok := d.str(n, p); ok {
				k, err := core.ParseSink(s)
				if err != nil {
					d.errorf(n.Line, p, "%v", err)
					return
				}
				v.Sink = &k
			}
		},
		"hypervisor": func(n *yaml.Node, p string) {
			if s, ok := d.str(n, p); ok {
				if err := CheckHypervisor(s); err != nil {
					d.errorf(n.Line, p, "%v", err)
					return
				}
				v.Hypervisor = s
			}
		},
		"hosts": func(n *yaml.Node, p string) {
			d.seq(n, p, func(n *yaml.Node, p string) {
				v.Hosts = append(v.Hosts, d.host(n, p))
			})
		},
		"networks": func(n *yaml.Node, p string) {
			d.seq(n, p, func(n *yaml.Node, p string) {
				v.Networks = append(v.Networks, d.network(n, p))
			})
		},
		"vms": func(n *yaml.Node, p string) {
			d.seq(n, p, func(n *yaml.Node, p string) {
				v.VMs = append(v.VMs, d.vm(n, p))
			})
		},
	})
}

func (d *decoder) host(n *yaml.Node, path string) Host {
	var h Host
	d.fields(n, path, map[string]field{
		"name":    func(n *yaml.Node, p string) { h.Name, _ = d.str(n, p) },
		"address": func(n *yaml.Node, p string) { h.Address, _ = d.str(n, p) },
		"agent":   func(n *yaml.Node, p string) { h.Agent, _ = d.str(n, p) },
		"ram_budget": func(n *yaml.Node, p string) {
			h.RAMBudget, _ = d.size(n, p)
		},
	})
	return h
}

func (d *decoder) network(n *yaml.Node, path string) Network {
	var nw Network
	d.fields(n, path, map[string]field{
		"name": func(n *yaml.Node, p string) { nw.Name, _ = d.str(n, p) },
		"subnet": func(n *yaml.Node, p string) {
			if s, ok := d.str(n, p); ok {
				pfx, err := netip.ParsePrefix(s)
				if err != nil {
					d.errorf(n.Line, p, "%q is not a subnet (want e.g. 10.0.0.0/24)", s)
					return
				}
				nw.Subnet = pfx
			}
		},
	})
	return nw
}

func (d *decoder) vm(n *yaml.Node, path string) VM {
	var vm VM
	d.fields(n, path, map[string]field{
		"name":    func(n *yaml.Node, p string) { vm.Name, _ = d.str(n, p) },
		"host":    func(n *yaml.Node, p string) { vm.Host, _ = d.str(n, p) },
		"network": func(n *yaml.Node, p string) { vm.Network, _ = d.str(n, p) },
		"memory":  func(n *yaml.Node, p string) { vm.Memory, _ = d.size(n, p) },
		"vcpus": func(n *yaml.Node, p string) {
			if s, ok := d.str(n, p); ok {
				c, err := strconv.Atoi(s)
				if errors.Is(err, strconv.ErrRange) {
					d.errorf(n.Line, p, "%s is out of range (want 1..%d)", s, MaxVCPUs)
					return
				}
				if err != nil {
					d.errorf(n.Line, p, "%q is not a whole number", s)
					return
				}
				vm.VCPUs = c
			}
		},
		"mac": func(n *yaml.Node, p string) {
			if s, ok := d.str(n, p); ok {
				mac, err := net.ParseMAC(s)
				if err != nil || len(mac) != 6 {
					d.errorf(n.Line, p, "%q is not a MAC address (want e.g. 52:54:00:12:34:01)", s)
					return
				}
				vm.MAC = mac
			}
		},
		"ip": func(n *yaml.Node, p string) {
			s, ok := d.str(n, p)
			if !ok {
				return
			}
			if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
				vm.IP = a
				return
			}
			pfx, err := netip.ParsePrefix(s)
			if err != nil {
				d.errorf(n.Line, p, "%q is not an IP address (want e.g. 10.0.0.1 or 10.0.0.1/24)", s)
				return
			}
			vm.IP = pfx.Addr()
			if d.v.ipBits == nil {
				d.v.ipBits = map[string]int{}
			}
			d.v.ipBits[p] = pfx.Bits()
		},
		"guest": func(n *yaml.Node, p string) { vm.Guest = d.guest(n, p) },
	})
	return vm
}

func (d *decoder) guest(n *yaml.Node, path string) Guest {
	var g Guest
	file := func(dst *string) field {
		return func(n *yaml.Node, p string) {
			if s, ok := d.str(n, p); ok && s != "" {
				if !filepath.IsAbs(s) {
					s = filepath.Join(d.baseDir, s)
				}
				*dst = filepath.Clean(s)
			}
		}
	}
	d.fields(n, path, map[string]field{
		"builtin": func(n *yaml.Node, p string) { g.Builtin, _ = d.str(n, p) },
		"args": func(n *yaml.Node, p string) {
			d.seq(n, p, func(n *yaml.Node, p string) {
				if s, ok := d.str(n, p); ok {
					g.Args = append(g.Args, s)
				}
			})
		},
		"kernel":  file(&g.Kernel),
		"initrd":  file(&g.Initrd),
		"cmdline": func(n *yaml.Node, p string) { g.Cmdline, _ = d.str(n, p) },
		"disk":    file(&g.Disk),
	})
	return g
}

// fields decodes mapping n, calling fs[key] for each key; it reports
// duplicate and unknown keys. A null value counts as absent.
func (d *decoder) fields(n *yaml.Node, path string, fs map[string]field) {
	n = resolve(n)
	d.v.lines[path] = n.Line
	if n.Kind != yaml.MappingNode {
		d.errorf(n.Line, path, "want a mapping, got %s", kindName(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		p := k.Value
		if path != "" {
			p = path + "." + k.Value
		}
		if first, ok := seen[k.Value]; ok {
			d.errorf(k.Line, p, "field given twice (first at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		f, ok := fs[k.Value]
		if !ok {
			names := make([]string, 0, len(fs))
			for name := range fs {
				names = append(names, name)
			}
			sort.Strings(names)
			d.errorf(k.Line, p, "unknown field (want one of %s)", strings.Join(names, ", "))
			continue
		}
		if v := resolve(val); v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
			continue
		}
		d.v.lines[p] = k.Line
		f(val, p)
	}
}

// seq decodes sequence n, calling item for each element with path
// "path[i]".
func (d *decoder) seq(n *yaml.Node, path string, item field) {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		d.errorf(n.Line, path, "want a list, got %s", kindName(n))
		return
	}
	for i, e := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		d.v.lines[p] = resolve(e).Line
		item(e, p)
	}
}

// str decodes a scalar. Any scalar is accepted, so "name: 42" is the name
// "42".
func (d *decoder) str(n *yaml.Node, path string) (string, bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode {
		d.errorf(n.Line, path, "want a single value, got %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

// size decodes a byte count such as 256MiB.
func (d *decoder) size(n *yaml.Node, path string) (int64, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return 0, false
	}
	b, err := ParseSize(s)
	if err != nil {
		d.errorf(resolve(n).Line, path, "%v", err)
		return 0, false
	}
	return b, true
}

// resolve follows aliases.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	default:
		return "nothing"
	}
}

// tabLine returns the first line from 'from' on whose indentation holds a
// tab, or from if there is none.
func tabLine(data []byte, from int) int {
	for i, l := range strings.Split(string(data), "\n") {
		if i+1 >= from && strings.Contains(l[:len(l)-len(strings.TrimLeft(l, " \t"))], "\t") {
			return i + 1
		}
	}
	return from
}
