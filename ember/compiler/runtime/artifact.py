"""The compiled artifact: a directory with the library and its metadata.

    OUT/
      model.so      the compiled Relax executable (weights inside)
      ember.json    signature, target, versions, pipeline, sha256 of model.so

`load(dir)` needs only the TVM runtime. `CompiledModel.run` checks inputs
against the signature before anything reaches TVM.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ember.compiler.runtime import storage
from ember.errors import ArtifactError, RuntimeInputError
from ember.fileutil import atomic_write_text
from ember.compiler.runtime.isolate import mark_pool_started

FORMAT_VERSION = 1
# dtypes numpy and TVM name alike and both hold as they are (no storage.py narrowing)
PLAIN_DTYPES = frozenset({"bool", "float16", "float32", "float64", "int8", "int16", "int32", "int64",
                          "uint8", "uint16", "uint32", "uint64"})
LIBRARY = "model.so"
METADATA = "ember.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class CompiledModel:
    """A model built for one target. Callable on this machine when the
    target is the host (or compatible with it)."""

    def __init__(self, module, metadata: dict[str, Any], executable=None, target=None):
        self._module = module  # runtime.Module (loaded) or relax Executable (fresh)
        self._executable = executable
        self._target = target  # ember Target, for cross-linking on save
        self.compile_seconds: float | None = None
        self.metadata = metadata
        self._vm = None
        self._main = None  # the VM's "main", looked up once
        self._staged: list = []  # device tensors the inputs are copied into, reused across runs
        self._host = False  # whether the VM runs on this machine's CPU (outputs read in place)
        self._plain: list | None = None  # per input: its numpy dtype where numpy and TVM share it
        self._names: list[str] = []  # the input names, with _plain

    # ---- signature ----------------------------------------------------
    @property
    def inputs(self) -> list[dict[str, Any]]:
        return self.metadata["inputs"]

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return self.metadata["outputs"]

    @property
    def input_names(self) -> list[str]:
        return [i["name"] for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o["name"] for o in self.outputs]

    def _vm_instance(self):
        if self._vm is None:
            import tvm
            from tvm.runtime.vm import VirtualMachine

            target = self.metadata["target"]
            if self._module is None:
                where = "a CUDA GPU" if target.get("runner") == "gpu" else target.get("triple")
                raise ArtifactError(f"this model is compiled for {where}; it cannot run on this machine "
                                    "directly (use `ember run --emulate` or `--rpc`)")
            dev = tvm.device(device_name(target), 0)
            self._device = dev
            self._host = device_name(target) == "cpu"
            try:
                self._vm = VirtualMachine(self._module, dev)
            except Exception as e:  # TVM fails to load some executables it built (empty constants)
                from ember.errors import first_line

                raise ArtifactError(f"TVM cannot load the model it built: {first_line(e)}") from None
        return self._vm

    def check_inputs(self, inputs: dict[str, Any]) -> list[np.ndarray]:
        if self._plain is None:
            self._plain = [np.dtype(s["dtype"]) if s["dtype"] in PLAIN_DTYPES else None for s in self.inputs]
            self._names = self.input_names
        expected = self._names
        if len(inputs) != len(expected) or any(k not in inputs for k in expected):
            unknown = [k for k in inputs if k not in expected]
            if unknown:
                raise RuntimeInputError(f"unknown input {unknown[0]!r}; the model takes {', '.join(expected) or 'no inputs'}")
            missing = [k for k in expected if k not in inputs]
            raise RuntimeInputError(f"missing input {missing[0]!r}; the model takes {', '.join(expected)}")
        arrays = []
        for spec, plain in zip(self.inputs, self._plain):
            a = inputs[spec["name"]]
            if type(a) is not np.ndarray:
                a = np.asarray(a)
            if plain is not None and a.dtype == plain:  # a.dtype.name costs microseconds; a small model runs in tens
                arrays.append(a if a.flags.c_contiguous else np.require(a, requirements="C"))
                self._check_shape(spec, a)
                continue
            if spec["dtype"] and a.dtype.name != spec["dtype"]:
                raise RuntimeInputError(f"input {spec['name']!r} must be {spec['dtype']}, got {a.dtype}")
            self._check_shape(spec, a)
            narrow_type = storage.by_name(a.dtype.name)
            if narrow_type is not None:  # stored in bytes (storage.py)
                a = storage.to_storage(a, narrow_type)
            arrays.append(np.require(a, requirements="C"))  # keeps 0-d arrays 0-d
        return arrays

    @staticmethod
    def _check_shape(spec: dict[str, Any], a: np.ndarray) -> None:
        shape = spec["shape"]
        if shape is not None:
            if a.ndim != len(shape) or any(isinstance(d, int) and d != s for d, s in zip(shape, a.shape)):
                want = "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
                raise RuntimeInputError(f"input {spec['name']!r} must have shape {want}, got {list(a.shape)}")

    def _stage(self, arrays: list[np.ndarray]) -> list:
        """The inputs on the device, copied into tensors kept from the last run
        when shape and dtype match (a fresh allocation per run costs page faults
        that show on small models). On the host, bytes are copied directly: TVM's
        `copyfrom` checks cost 6 us an input."""
        import ctypes

        import tvm
        from tvm.runtime import _ffi_api

        if len(self._staged) != len(arrays):
            self._staged = [None] * len(arrays)
        for i, a in enumerate(arrays):
            kept = self._staged[i]
            if kept is None or kept[1] != a.shape or kept[2] != a.dtype:
                self._staged[i] = (tvm.runtime.tensor(a, self._device), a.shape, a.dtype)
            elif self._host and a.dtype.kind in "biuf" and a.dtype.isbuiltin:  # C-contiguous (check_inputs)
                _ffi_api.TVMTensorCopyFromBytes(kept[0], ctypes.c_void_p(a.ctypes.data), a.nbytes)
            else:
                kept[0].copyfrom(a)
        return [kept[0] for kept in self._staged]

    def _main_function(self):
        if self._main is None:
            self._main = self._vm_instance()["main"]
        mark_pool_started()
        return self._main

    def run(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Run on named numpy inputs; returns outputs by name."""
        arrays = self.check_inputs(inputs)
        main = self._main_function()
        args = self._stage(arrays)
        try:
            result = main(*args)
        except AssertionError as e:  # ember's runtime checks (index bounds, division by zero)
            raise RuntimeInputError(str(e).strip().splitlines()[0]) from None
        except Exception as e:
            from ember.errors import first_line

            raise RuntimeInputError(f"the model failed at run time: {first_line(e)}") from None
        return dict(zip(self.output_names, vm_outputs(result, self.outputs, self._host)))

    __call__ = run

    def time(self, inputs: dict[str, Any], repeat: int = 20, warmup: int = 3) -> list[float]:
        """Wall-clock seconds of `repeat` runs (inputs already on the device)."""
        import time

        fn = self._main_function()
        args = self._stage(self.check_inputs(inputs))
        for _ in range(warmup):
            fn(*args)
        out = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn(*args)
            self._device.sync()
            out.append(time.perf_counter() - t0)
        return out

    # ---- persistence --------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise ArtifactError(f"{directory} exists and is not a directory")
        if self._executable is None:
            raise ArtifactError("this model was loaded from disk; copy its directory instead")
        directory.mkdir(parents=True, exist_ok=True)
        fcompile = self._target.cross_compiler() if self._target is not None else None
        from ember.compiler.runtime.native_stderr import quiet_native_stderr

        with tempfile.TemporaryDirectory(dir=directory) as tmp, quiet_native_stderr():
            lib_tmp = Path(tmp) / LIBRARY
            if fcompile is not None:
                self._executable.export_library(str(lib_tmp), fcompile=fcompile)
            else:
                self._executable.export_library(str(lib_tmp))
            shutil.move(str(lib_tmp), directory / LIBRARY)
        meta = dict(self.metadata)
        meta["library_sha256"] = _sha256(directory / LIBRARY)
        atomic_write_text(directory / METADATA, json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return directory


def device_name(target: dict[str, Any]) -> str:
    """TVM's name of the device an artifact's target (its metadata) runs on."""
    return "cuda" if target.get("tvm", {}).get("kind") == "cuda" else "cpu"


def cuda_present() -> bool:
    """Whether this machine has a CUDA GPU TVM can use."""
    import tvm

    return bool(tvm.cuda(0).exist)


def vm_outputs(result, specs: list[dict[str, Any]], host: bool = False) -> list:
    """The VM's result as the outputs `specs` describe, in order (see `_output`); `host`: the
    tensors are in this process's memory."""
    computed = [s for s in specs if not s.get("empty")]
    values = [] if not computed else [result] if len(computed) == 1 else list(result)
    if len(values) != len(computed):
        raise ArtifactError(f"model returned {len(values)} outputs, metadata lists {len(computed)}")
    return with_empty_outputs([_output(v, spec, host) for v, spec in zip(values, computed)], specs)


def array_outputs(arrays: list[np.ndarray], specs: list[dict[str, Any]]) -> list:
    """Outputs computed elsewhere (the emulator) and returned as numpy arrays,
    as `vm_outputs` gives them: narrow types back from their storage, empty
    outputs put back."""
    computed = [s for s in specs if not s.get("empty")]
    if len(arrays) != len(computed):
        raise ArtifactError(f"model returned {len(arrays)} outputs, metadata lists {len(computed)}")
    return with_empty_outputs([_output(a, spec) for a, spec in zip(arrays, computed)], specs)


def with_empty_outputs(values: list, specs: list[dict[str, Any]]) -> list:
    """The computed outputs `values` with the outputs that have no elements
    (spec "empty": not computed, see driver._leave_out_empty_outputs) put back
    in their places as empty arrays. A model whose outputs are all empty
    returns one ignored byte."""
    computed = [s for s in specs if not s.get("empty")]
    if not computed:
        values = []
    if len(values) != len(computed):
        raise ArtifactError(f"model returned {len(values)} outputs, metadata lists {len(computed)}")
    it = iter(values)
    return [_empty_output(spec) if spec.get("empty") else next(it) for spec in specs]


def _empty_output(spec: dict[str, Any]) -> np.ndarray:
    narrow_type = storage.by_name(spec["dtype"])
    return np.empty(spec["shape"], storage.numpy_type(narrow_type) if narrow_type is not None else spec["dtype"])


def _output(value, spec: dict[str, Any], host: bool = False):
    """One VM result as the user sees it: a numpy array (ml_dtypes for narrow types), or a
    list of them for a sequence output. A host tensor of a type numpy shares is copied out
    through DLPack (TVM's `numpy()` costs 6 us); a copy, as the VM may reuse its memory."""
    from tvm.runtime import ShapeTuple

    if host and spec.get("dtype") in PLAIN_DTYPES and not spec.get("sequence") and not isinstance(value, ShapeTuple):
        return np.from_dlpack(value).copy()
    if spec.get("sequence"):
        return [_output(v, {**spec, "sequence": False}) for v in value]
    if isinstance(value, ShapeTuple):  # a shape computed at run time (e.g. a Shape output)
        return np.array(list(value), dtype=np.int64)
    array = value if isinstance(value, np.ndarray) else value.numpy()
    narrow_type = storage.by_name(spec["dtype"]) if spec.get("dtype") else None
    return array if narrow_type is None else storage.from_storage(array, narrow_type)


def load(directory: str | Path) -> CompiledModel:
    """Load an artifact directory (needs only the TVM runtime)."""
    directory = Path(directory)
    meta_path = directory / METADATA
    lib_path = directory / LIBRARY
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: not an artifact directory (compile a model with `ember compile`)")
    if not meta_path.is_file() or not lib_path.is_file():
        raise ArtifactError(f"{directory}: incomplete artifact (needs {METADATA} and {LIBRARY})")
    try:
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{meta_path}: corrupt metadata ({e})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{directory}: artifact format {meta.get('format_version')!r}, "
                            f"this ember reads format {FORMAT_VERSION}; recompile the model")
    for key in ("inputs", "outputs", "target", "library_sha256"):
        if key not in meta:
            raise ArtifactError(f"{meta_path}: corrupt metadata (no {key!r})")
    if _sha256(lib_path) != meta["library_sha256"]:
        raise ArtifactError(f"{lib_path}: library does not match its metadata (changed or corrupt)")
    import tvm

    if meta.get("tvm_version") and meta["tvm_version"] != tvm.__version__:
        raise ArtifactError(f"{directory}: built with TVM {meta['tvm_version']}, this is TVM "
                            f"{tvm.__version__}; recompile the model")
    runner = meta["target"].get("runner", "local")
    if runner not in ("local", "gpu") or (runner == "gpu" and not tvm.cuda(0).exist):
        return CompiledModel(None, meta)  # signature only: runs under emulation, over RPC or on a GPU elsewhere
    from ember.compiler.runtime.native_stderr import quiet_native_stderr

    try:
        with quiet_native_stderr():
            module = tvm.runtime.load_module(str(lib_path))
    except Exception as e:
        from ember.errors import first_line

        raise ArtifactError(f"{lib_path}: cannot load the library ({first_line(e)})") from None
    return CompiledModel(module, meta)
