package data

import "flag"

// Set parses s with ParseResize, so *Resize is a flag.Value.
func (r *Resize) Set(s string) error {
	v, err := ParseResize(s)
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// String returns the split name, so *Split is a flag.Value.
func (s *Split) String() string {
	if s == nil || *s == "" {
		return string(Train)
	}
	return string(*s)
}

// Set parses v with ParseSplit.
func (s *Split) Set(v string) error {
	p, err := ParseSplit(v)
	if err != nil {
		return err
	}
	*s = p
	return nil
}

// BindFlags registers the dataset flags on fs, writing into o:
// -data-dir, -split, -size, -resize, -channels and -labels. Values already
// in o are the defaults shown by -h.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Dir, "data-dir", o.Dir, "`directory` of the mnist / fashion-mnist idx files (default: found automatically)")
	fs.Var(&o.Split, "split", "dataset `split`: train or test")
	fs.IntVar(&o.Size, "size", o.Size, "image height and width fed to the model (0 = native size of idx data)")
	fs.Var(&o.Resize, "resize", "how idx images reach -size, `mode`: none, pad (centre on -1 background) or resize")
	fs.IntVar(&o.Channels, "channels", o.Channels, "image folders: 1 (gray) or 3 (RGB); 0 = 3")
	fs.BoolVar(&o.Labels, "labels", o.Labels, "image folders: use each first-level subfolder as a class")
}
