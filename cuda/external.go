package cuda

import "fmt"

// WithStream calls f with the device's context current on the calling OS
// thread and the device's stream, holding the device for the duration:
// for libraries that queue their own work on it, such as NCCL's
// all-reduce (which then follows the device's queued kernels in stream
// order). f must not call the Device's own methods. A sticky error of
// the device is returned without calling f.
func (d *Device) WithStream(f func(stream uintptr) error) error {
	if !d.enter() {
		err := d.err
		d.leave()
		if err == nil {
			err = fmt.Errorf("cuda: device unavailable")
		}
		return err
	}
	defer d.leave()
	return f(d.stream)
}
