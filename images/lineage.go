package images

// Node is one image in the lineage tree: the manifest and the images built
// on it.
type Node struct {
	Manifest
	Children []*Node
}

// isChildOf reports whether c was built on p: its Parent records p (same
// ref and digest: a version replaced with --force is a different image), or
// its blob is a qcow2 overlay on p's blob.
func isChildOf(c, p Manifest) bool {
	if c.Name == p.Name && c.Version == p.Version {
		return false
	}
	if c.Parent != nil && c.Parent.Ref == p.Ref().String() && c.Parent.Digest == p.Digest {
		return true
	}
	return c.BackingDigest != "" && c.BackingDigest == p.Digest
}

// Tree returns the store's images as a forest: the roots are images with no
// Parent or whose parent is gone, and each node's children are the images
// built on it (see Children), sorted by name and version. When an image
// could hang under several (versions sharing one blob), it goes under the
// one its Parent names, else the first in version order. As with List,
// damaged manifests are left out and reported in the error.
func (s *Store) Tree() ([]*Node, error) {
	ms, err := s.List() // sorted: children come out in order
	parent := make([]int, len(ms))
	for i, c := range ms {
		parent[i] = -1
		for j, p := range ms { // a Parent match wins over a backing match
			if j != i && c.Parent != nil && c.Parent.Ref == p.Ref().String() && c.Parent.Digest == p.Digest {
				parent[i] = j
				break
			}
		}
		if parent[i] >= 0 {
			continue
		}
		for j, p := range ms {
			if j != i && isChildOf(c, p) {
				parent[i] = j
				break
			}
		}
	}
	breakCycles(parent)
	nodes := make([]*Node, len(ms))
	for i, m := range ms {
		nodes[i] = &Node{Manifest: m}
	}
	var roots []*Node
	for i, n := range nodes {
		if p := parent[i]; p >= 0 {
			nodes[p].Children = append(nodes[p].Children, n)
		} else {
			roots = append(roots, n)
		}
	}
	return roots, err
}

// breakCycles makes parent a forest. Manifests are only metadata and may
// claim each other as parents; an image on a cycle becomes a root, so every
// image still appears exactly once.
func breakCycles(parent []int) {
	const (
		unseen = iota
		onPath
		done
	)
	state := make([]int, len(parent))
	for i := range parent {
		var path []int
		j := i
		for j >= 0 && state[j] == unseen {
			state[j] = onPath
			path = append(path, j)
			j = parent[j]
		}
		if j >= 0 && state[j] == onPath { // back on this walk: a cycle
			parent[j] = -1
		}
		for _, k := range path {
			state[k] = done
		}
	}
}

// Children returns the stored versions built on r (any ref form; it is
// resolved first): those whose Parent records r's ref and manifest digest,
// or whose BackingDigest is r's digest. They are sorted by name and
// version. Damaged manifests are reported in the error, with the children
// that could be read.
func (s *Store) Children(r Ref) ([]Ref, error) {
	m, err := s.Resolve(r)
	if err != nil {
		return nil, err
	}
	return s.children(m)
}

func (s *Store) children(m Manifest) ([]Ref, error) {
	ms, err := s.List()
	var out []Ref
	for _, c := range ms {
		if isChildOf(c, m) {
			out = append(out, c.Ref())
		}
	}
	return out, err
}
