package images

// Image is a stored image ready to boot or build on: its manifest and the
// path of its blob.
type Image struct {
	Manifest
	Blob string
}

// CheckImageRef says whether s may stand where kiln takes an image (a
// template's base, a fleet's image): a stored image's ref, or a registry
// reference that the command pulls first. It checks the syntax only, as
// `kiln validate` must refuse exactly what Use would.
func CheckImageRef(s string) error {
	if _, err := ParseRef(s); err != nil && !IsRegistryRef(s) {
		return err
	}
	return nil
}

// Use turns a ref as users write it ("name:version", "name@channel" or a
// bare name for the newest version) into an image ready to use: parsed,
// resolved, its blobs checked (present, regular files of the recorded
// sizes) and, unless allowRevoked, refused when revoked (the error then
// matches ErrRevoked). It is the one way a ref from a flag, a template or a
// fleet file becomes an image; its errors speak of the image, and callers
// name the flag or field that overrides a revocation.
func (s *Store) Use(ref string, allowRevoked bool) (Image, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return Image{}, err
	}
	m, err := s.Resolve(r)
	if err != nil {
		return Image{}, err
	}
	if err := s.CheckUsable(m, allowRevoked); err != nil {
		return Image{}, err
	}
	return Image{Manifest: m, Blob: s.BlobPath(m.Digest)}, nil
}
