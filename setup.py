"""Extension list and build switches only; metadata lives in pyproject.toml.

FASTP2P_NO_EXTENSIONS=1   build nothing native (pure twins run, HAVE_NATIVE False)
FASTP2P_WITH_VERBS=auto|0|1   build the RDMA verbs module (auto: if infiniband/verbs.h exists)
FASTP2P_CYTHON_TRACE=1    line tracing + debug flags
"""

import os
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import Extension, setup

NO_EXT = os.environ.get("FASTP2P_NO_EXTENSIONS", "") not in ("", "0") or (
    sys.implementation.name != "cpython"
)
WITH_VERBS = os.environ.get("FASTP2P_WITH_VERBS", "auto")
TRACE = os.environ.get("FASTP2P_CYTHON_TRACE", "") not in ("", "0")
CFLAGS = ["-std=c11", "-O3", "-Wall", "-Wextra", "-Werror=implicit-function-declaration",
          "-Wno-unused-function", "-Wno-unused-parameter"]
if TRACE:
    CFLAGS += ["-O0", "-g", "-DCYTHON_TRACE=1"]


def have_header(name: str) -> bool:
    """Try-compile probe for a system header."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(f"#include <{name}>\nint main(void) {{ return 0; }}\n")
        cmd = [*cc.split(), "-c", src, "-o", os.path.join(tmp, "probe.o")]
        return subprocess.run(cmd, capture_output=True).returncode == 0


def native(name: str, *csrc: str, **kw) -> Extension:
    return Extension(
        f"fastp2p._native.{name}",
        [f"fastp2p/_native/{name}.pyx", *(f"csrc/{c}" for c in csrc)],
        include_dirs=["csrc"],
        extra_compile_args=CFLAGS,
        **kw,
    )


ext = []
if not NO_EXT:
    if not have_header("openssl/evp.h"):
        sys.exit("fastp2p: OpenSSL headers not found (apt-get install libssl-dev), "
                 "or set FASTP2P_NO_EXTENSIONS=1 for the pure-Python build")
    ext = [
        native("buffer", "fp_pool.c"),
        native("frame", "fp_frame.c"),
        native("aead", "fp_aead.c", "fp_gcm.c", "fp_chacha.c", "fp_par.c",
               libraries=["crypto", "pthread"]),
        native("shm", "fp_ring.c"),
        native("xsalsa20", "fp_xsalsa20.c"),
    ]
    if WITH_VERBS == "1" or (WITH_VERBS == "auto" and have_header("infiniband/verbs.h")):
        if os.path.exists("fastp2p/_native/verbs.pyx"):
            ext.append(native("verbs", "fp_verbs.c", libraries=["ibverbs"]))
        elif WITH_VERBS == "1":
            sys.exit("fastp2p: FASTP2P_WITH_VERBS=1 but this source tree has no verbs module yet")

if ext:
    from Cython.Build import cythonize

    ext = cythonize(
        ext,
        compiler_directives={"language_level": 3, "embedsignature": True, "linetrace": TRACE,
                             "boundscheck": False, "wraparound": False},
    )

setup(ext_modules=ext)
