package sim

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// view is one targetcli process's UI tree: the configshell nodes it built
// from configfs at start. targetcli updates it only for its own changes and
// only where its code says so, so it goes stale (after a backstore delete the
// LUN nodes stay; changes by other processes are never seen). The "sibling"
// bug comes from exactly that.
type view struct {
	backstores map[string][]string // plugin → storage object names
	targets    []*vTarget
}

type vTarget struct {
	fabric, wwn string
	tpgs        []*vTPG
}

type vTPG struct {
	tag     int
	luns    []int
	acls    map[string][]int // node wwn → mapped LUN indexes
	portals []string
}

var plugins = []string{"block", "fileio", "pscsi", "ramdisk"}
var fabrics = []string{"iscsi", "loopback", "vhost", "xen-pvscsi"}

func buildView(st *state) *view {
	v := &view{backstores: map[string][]string{}}
	for _, so := range st.StorageObjects {
		v.backstores[so.Plugin] = append(v.backstores[so.Plugin], so.Name)
	}
	for _, t := range st.Targets {
		vt := &vTarget{fabric: t.Fabric, wwn: t.WWN}
		for i := range t.TPGs {
			vt.tpgs = append(vt.tpgs, buildVTPG(&t.TPGs[i]))
		}
		v.targets = append(v.targets, vt)
	}
	return v
}

func buildVTPG(g *tpg) *vTPG {
	vg := &vTPG{tag: g.Tag, acls: map[string][]int{}}
	for _, l := range g.LUNs {
		vg.luns = append(vg.luns, l.Index)
	}
	for _, a := range g.NodeACLs {
		var m []int
		for _, ml := range a.MappedLUNs {
			m = append(m, ml.Index)
		}
		vg.acls[a.NodeWWN] = m
	}
	for _, p := range g.Portals {
		var pp struct {
			IP   string `json:"ip_address"`
			Port int    `json:"port"`
		}
		if json.Unmarshal(p, &pp) == nil {
			vg.portals = append(vg.portals, fmt.Sprintf("%s:%d", pp.IP, pp.Port))
		}
	}
	return vg
}

func (v *view) target(fabric, wwn string) *vTarget {
	for _, t := range v.targets {
		if t.fabric == fabric && t.wwn == wwn {
			return t
		}
	}
	return nil
}

func (v *view) tpg(fabric, wwn string, tag int) *vTPG {
	if t := v.target(fabric, wwn); t != nil {
		for _, g := range t.tpgs {
			if g.tag == tag {
				return g
			}
		}
	}
	return nil
}

// refreshTPG rebuilds one TPG's nodes from the live state, as UITPG.refresh
// does after `luns delete` or a `luns create` that adds mapped LUNs.
func (v *view) refreshTPG(st *state, fabric, wwn string, tag int) {
	vg := v.tpg(fabric, wwn, tag)
	g := st.tpg(wwn, tag)
	if vg == nil || g == nil {
		return
	}
	*vg = *buildVTPG(g)
}

// children lists the names of the UI node at p, sorted as configshell's ls
// sorts them (trailing numbers numerically).
func (v *view) children(p []string) []string {
	var out []string
	switch {
	case len(p) == 0:
		out = append([]string{"backstores"}, fabrics...)
	case len(p) == 1 && p[0] == "backstores":
		out = slices.Clone(plugins)
	case len(p) == 2 && p[0] == "backstores":
		out = slices.Clone(v.backstores[p[1]])
	case len(p) == 3 && p[0] == "backstores":
		out = []string{"alua"}
	case len(p) == 4 && p[0] == "backstores":
		out = []string{"default_tg_pt_gp"}
	case len(p) == 1:
		for _, t := range v.targets {
			if t.fabric == p[0] {
				out = append(out, t.wwn)
			}
		}
	case len(p) == 2:
		if t := v.target(p[0], p[1]); t != nil {
			for _, g := range t.tpgs {
				out = append(out, "tpg"+strconv.Itoa(g.tag))
			}
		}
	case len(p) == 3:
		out = []string{"acls", "luns", "portals"}
	case len(p) >= 4:
		tag, _ := strconv.Atoi(strings.TrimPrefix(p[2], "tpg"))
		g := v.tpg(p[0], p[1], tag)
		if g == nil {
			return nil
		}
		switch {
		case len(p) == 4 && p[3] == "luns":
			for _, l := range g.luns {
				out = append(out, "lun"+strconv.Itoa(l))
			}
		case len(p) == 4 && p[3] == "acls":
			for w := range g.acls {
				out = append(out, w)
			}
		case len(p) == 4 && p[3] == "portals":
			out = slices.Clone(g.portals)
		case len(p) == 5 && p[3] == "acls":
			for _, m := range g.acls[p[4]] {
				out = append(out, "mapped_lun"+strconv.Itoa(m))
			}
		}
	}
	sortNames(out)
	return out
}

var trailingNumber = regexp.MustCompile(`^(.*?)(\d+)$`)

func sortNames(names []string) {
	key := func(s string) (string, int) {
		if m := trailingNumber.FindStringSubmatch(s); m != nil {
			n, _ := strconv.Atoi(m[2])
			return m[1], n
		}
		return s, 0
	}
	sort.SliceStable(names, func(i, j int) bool {
		a, an := key(names[i])
		b, bn := key(names[j])
		if a != b {
			return a < b
		}
		return an < bn
	})
}

// kind names the type of the UI node at p.
func kind(p []string) string {
	switch {
	case len(p) == 0:
		return "root"
	case p[0] == "backstores":
		return [...]string{"", "backstores", "backstore", "so", "alua", "aluatpg"}[len(p)]
	case len(p) == 1:
		return "fabric"
	case len(p) == 2:
		return "target"
	case len(p) == 3:
		return "tpg"
	case len(p) == 4:
		return p[3] // acls, luns, portals
	case len(p) == 5:
		return map[string]string{"acls": "acl", "luns": "lun", "portals": "portal"}[p[3]]
	}
	return "mappedlun"
}

func pathString(p []string) string { return "/" + strings.Join(p, "/") }

// resolve looks a path up from cwd as ConfigNode.get_node does. The error
// text is configshell's.
func (v *view) resolve(cwd []string, path string) ([]string, error) {
	if path == "" {
		path = "."
	}
	if strings.HasPrefix(path, "@") {
		return nil, fmt.Errorf("No such bookmark %s", strings.TrimSpace(strings.TrimLeft(path, "@")))
	}
	for strings.Contains(path, "//") {
		path = strings.ReplaceAll(path, "//", "/")
	}
	if len(path) > 1 {
		path = strings.TrimRight(path, "/")
	}
	cur := slices.Clone(cwd)
	if strings.HasPrefix(path, "/") {
		cur = nil
		path = strings.TrimLeft(path, "/")
		if path == "" {
			return cur, nil
		}
	}
	for _, name := range strings.Split(path, "/") {
		switch name {
		case ".":
		case "..":
			if len(cur) > 0 {
				cur = cur[:len(cur)-1]
			}
		default:
			if !slices.Contains(v.children(cur), name) {
				return nil, fmt.Errorf("No such path %s/%s", strings.TrimRight(pathString(cur), "/"), name)
			}
			cur = append(cur, name)
		}
	}
	return cur, nil
}

// render draws the tree under p the way configshell's ls does when stdout
// is not a terminal (width 132, no colors).
func (sh *shell) render(p []string, depth int) string {
	st, err := sh.store.read()
	if err != nil {
		st = &state{}
	}
	var b strings.Builder
	var walk func(p []string, margin []bool, depth int)
	walk = func(p []string, margin []bool, depth int) {
		name := "/"
		if len(p) > 0 {
			name = p[len(p)-1]
		}
		line := ""
		for _, pipe := range margin[:len(margin)-1] {
			if pipe {
				line += "| "
			} else {
				line += "  "
			}
		}
		line += "o- "
		desc := sh.summary(st, p)
		pad := 132 - 1 - (len(desc) + 3) - len(line) - len(name)
		if pad < 0 {
			pad = 0
		}
		b.WriteString(line + name + " " + strings.Repeat(".", pad) + " [" + desc + "]\n")
		if depth == 0 {
			return
		}
		kids := sh.view.children(p)
		for i, k := range kids {
			walk(append(slices.Clone(p), k), append(margin, i < len(kids)-1), depth-1)
		}
	}
	walk(p, []bool{false}, depth)
	return strings.TrimSuffix(b.String(), "\n")
}

func (sh *shell) summary(st *state, p []string) string {
	switch kind(p) {
	case "backstore":
		return fmt.Sprintf("Storage Objects: %d", len(sh.view.backstores[p[1]]))
	case "so":
		_, so := st.so(p[1], p[2])
		if so == nil {
			return "BROKEN STORAGE LINK"
		}
		wb := "write-thru"
		if so.WriteBack {
			wb = "write-back"
		}
		return fmt.Sprintf("%s (%s) %s activated", so.Dev, bytesToHuman(so.Size), wb)
	case "alua":
		return "ALUA Groups: 1"
	case "aluatpg":
		return "ALUA state: Active/optimized"
	case "fabric":
		return fmt.Sprintf("Targets: %d", len(sh.view.children(p)))
	case "target":
		return fmt.Sprintf("TPGs: %d", len(sh.view.children(p)))
	case "tpg":
		tag, _ := strconv.Atoi(strings.TrimPrefix(p[2], "tpg"))
		g := st.tpg(p[1], tag)
		if g == nil || !g.Enable {
			return "disabled"
		}
		acls := "no-gen-acls"
		if string(g.Attributes["generate_node_acls"]) == "1" {
			acls = "gen-acls"
		}
		return acls + ", no-auth"
	case "acls":
		return fmt.Sprintf("ACLs: %d", len(sh.view.children(p)))
	case "luns":
		return fmt.Sprintf("LUNs: %d", len(sh.view.children(p)))
	case "portals":
		return fmt.Sprintf("Portals: %d", len(sh.view.children(p)))
	case "lun":
		tag, _ := strconv.Atoi(strings.TrimPrefix(p[2], "tpg"))
		idx, _ := strconv.Atoi(strings.TrimPrefix(p[4], "lun"))
		if g := st.tpg(p[1], tag); g != nil {
			if i := g.lunAt(idx); i >= 0 {
				l := g.LUNs[i]
				plugin, name := splitSOPath(l.SO)
				if _, so := st.so(plugin, name); so != nil {
					return fmt.Sprintf("%s/%s (%s) (%s)", plugin, name, so.Dev, l.ALUA)
				}
			}
		}
		return "BROKEN STORAGE LINK"
	case "portal", "acl", "mappedlun":
		return "OK"
	}
	return "..."
}

func splitSOPath(p string) (plugin, name string) {
	rest := strings.TrimPrefix(p, "/backstores/")
	plugin, name, _ = strings.Cut(rest, "/")
	return plugin, name
}

func bytesToHuman(size int64) string {
	if size < 1024 {
		return fmt.Sprintf("%d bytes", size)
	}
	f := float64(size) / 1024
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		if f < 1024 {
			return fmt.Sprintf("%3.1f%s", f, u)
		}
		f /= 1024
	}
	return fmt.Sprintf("%3.1fPiB", f*1024)
}
