# Writes the .npy fixtures in this folder with NumPy's own writer.
# Run: /usr/bin/python3 gen.py   (Debian python3-numpy)
import numpy as np
from numpy.lib import format as fmt

a = np.arange(6, dtype=np.float32).reshape(2, 3) / 4 - 0.5
np.save("f4_2x3.npy", a)
np.save("f8_2x3.npy", a.astype(np.float64) + 1e-9)
np.save("i8_4.npy", np.array([-3, 0, 7, 2**40], dtype=np.int64))
np.save("i4_4.npy", np.array([-3, 0, 7, 2**30], dtype=np.int32))
np.save("u1_2x2.npy", np.array([[0, 1], [128, 255]], dtype=np.uint8))
np.save("f4_scalar.npy", np.float32(2.5))
np.save("f4_empty.npy", np.zeros((0, 3), dtype=np.float32))
np.save("f4_fortran.npy", np.asfortranarray(a))
np.save("f4_bigendian.npy", a.astype(">f4"))
for v in [(2, 0), (3, 0)]:
    with open("f4_2x3_v%d.npy" % v[0], "wb") as f:
        fmt.write_array(f, a, version=v)
print("numpy", np.__version__)
