"""The "Simulate" dock widget: a HAADF-STEM tilt series of an ase nanocluster, with ground truth.

Choose the cluster (shape, element, size in shells, variant, orientation seed), the tilt scheme,
the optics preset, the dose and the model, and press **Simulate**. The fast incoherent model takes
about a second for 181 frames of 128 px; abTEM multislice takes minutes per frame on a CPU and runs
with a progress bar, a live preview of the frame being scanned and a Cancel button that stops it
within a few scan rows. The result is a tilt-series layer and a ground-truth volume layer (for a
dynamic phantom: the volumes at the start and the end). The science is in
:mod:`napari_tiltgen.simulate`.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, FloatSpinBox, Label, SpinBox

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress
from napari_tiltgen.gui._base import WorkerWidget

if TYPE_CHECKING:
    import napari

STRUCTURES = ("icosahedron", "decahedron", "marks_decahedron", "octahedron", "cuboctahedron",
              "truncated_octahedron")
ELEMENTS = ("Au", "Pt", "Ag", "Cu", "Ir", "Al", "Yb", "Xe", "Pd", "Ni", "Rh", "Pb")
VARIANTS = ("solid", "alloy", "core_shell", "hollow")
DYNAMICS = ("static", "growth", "sintering", "alloying")


class SimulateWidget(WorkerWidget):
    """Simulate a cluster tilt series and its ground truth into the viewer."""

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__(napari_viewer, run_text="Simulate")
        self.structure = ComboBox(label="structure", value="icosahedron", choices=STRUCTURES)
        self.element = ComboBox(label="element", value="Au", choices=ELEMENTS,
                                tooltip="training elements Pt, Ag, Au, Cu; held-out Yb, Ir, Xe, Al")
        self.shells = SpinBox(label="size (shells)", value=4, min=1, max=12,
                              tooltip="icosahedron: 2 -> 13, 3 -> 55, 4 -> 147, 5 -> 309 atoms")
        self.variant = ComboBox(label="variant", value="solid", choices=VARIANTS)
        self.element2 = ComboBox(label="second element", value="Ag", choices=ELEMENTS,
                                 tooltip="alloy solute or core element")
        self.fraction = FloatSpinBox(label="fraction", value=0.0, min=0.0, max=0.95, step=0.05,
                                     tooltip="share of atoms for the variant (0: default - "
                                     "alloy 0.5, core/hollow 0.3)")
        self.rotation = ComboBox(label="orientation", value="random",
                                    choices=["random", "none"])
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1,
                            tooltip="seed of the orientation, alloy occupation and noise")
        self.dynamic = ComboBox(label="dynamics", value="static", choices=DYNAMICS,
                                tooltip="a cluster that changes during the acquisition")
        self.frame_time = FloatSpinBox(label="frame time (s)", value=20.0, min=0.1, max=3600.0,
                                       step=1.0)
        # a realistic holder: +-70 degrees (a 40-degree missing wedge), 2-degree steps
        self.tilt_start = FloatSpinBox(label="first tilt (deg)", value=-70.0, min=-90.0, max=90.0,
                                       step=1.0)
        self.tilt_end = FloatSpinBox(label="last tilt (deg)", value=70.0, min=-90.0, max=90.0,
                                     step=1.0)
        self.tilt_step = FloatSpinBox(label="tilt step (deg)", value=2.0, min=0.1, max=90.0,
                                      step=0.5)
        self.size = SpinBox(label="frame size (px)", value=128, min=16, max=1024, step=16)
        self.pixel_size = FloatSpinBox(label="pixel size (Å)", value=0.0, min=0.0, max=10.0,
                                       step=0.001, tooltip="0: automatic (cluster fills 75 %)")
        self.pixel_size.native.setDecimals(3)
        self.pixel_size.native.setSingleStep(0.01)
        self.preset = ComboBox(label="optics", value="non_aberrated",
                               choices=[("35 mrad, no aberrations", "non_aberrated"),
                                        ("25 mrad, Cs 100 µm", "aberrated")])
        self.dose = FloatSpinBox(label="dose (e-/Å²)", value=0.0, min=0.0, max=1e8, step=1000.0,
                                 tooltip="electron dose per frame for Poisson noise; 0: no noise")
        self.mode = ComboBox(label="model", value="fast",
                             choices=[("fast (incoherent)", "fast"),
                                      ("abTEM multislice (slow)", "abtem")])
        self.note = Label(value="")
        self.note.native.setWordWrap(True)
        self.abtem_settings: Any = None  # AbtemSettings override (tests, scripting)
        self.last_elapsed_s: float | None = None  # wall seconds of the last simulation
        self.last_cpu_s: float | None = None  # process CPU seconds of the last simulation
        widgets = [self.structure, self.element, self.shells, self.variant, self.element2,
                   self.fraction, self.rotation, self.seed, self.dynamic, self.frame_time,
                   self.tilt_start, self.tilt_end, self.tilt_step, self.size, self.pixel_size,
                   self.preset, self.dose, self.mode, self.note]
        for i, w in enumerate(widgets):
            self.insert(i, w)
        for w in (self.variant, self.dynamic, self.mode):
            w.changed.connect(self._update_enabled)
        self._update_enabled()

    # ------------------------------------------------------------------ controls
    def _update_enabled(self, *_: Any) -> None:
        static = self.dynamic.value == "static"
        two = (self.variant.value in ("alloy", "core_shell") and static) or \
            self.dynamic.value in ("sintering", "alloying")
        self.variant.enabled = static
        self.element2.enabled = two
        self.fraction.enabled = static and self.variant.value != "solid"
        self.rotation.enabled = static
        self.frame_time.enabled = not static
        if self.mode.value == "abtem":
            self.note.value = ("abTEM runs the multislice for every probe position: minutes per "
                               "frame on a CPU (see docs/simulation.md). Try a few tilts first.")
        else:
            self.note.value = ""

    def parameters(self) -> dict[str, Any]:
        """The current settings as keyword arguments of the simulation API."""
        if self.tilt_end.value < self.tilt_start.value:
            raise TiltgenError("the last tilt must not be below the first tilt.")
        return {
            "tilt_range": (float(self.tilt_start.value), float(self.tilt_end.value)),
            "tilt_step": float(self.tilt_step.value),
            "size": int(self.size.value),
            "pixel_size_A": float(self.pixel_size.value) or None,
            "optics": self.preset.value,
            "mode": self.mode.value,
            "dose_e_per_A2": float(self.dose.value) or None,
            "seed": int(self.seed.value),
            "abtem_settings": self.abtem_settings,
        }

    def _on_run(self) -> None:
        sim = self.parameters()
        cluster = {
            "structure": self.structure.value, "element": self.element.value,
            "shells": int(self.shells.value), "variant": self.variant.value,
            "element2": self.element2.value, "fraction": float(self.fraction.value) or None,
            "orientation": self.rotation.value, "seed": int(self.seed.value),
        }
        dynamic = self.dynamic.value
        frame_time = float(self.frame_time.value)
        self.note.value = ""
        self.start(lambda: self._job(cluster, dynamic, frame_time, sim),
                   on_result=self._add_layers, preview_name="frame being simulated")

    # ------------------------------------------------------------------ worker side
    def _job(self, cluster: dict[str, Any], dynamic: str, frame_time: float,
             sim: dict[str, Any]) -> Generator[Progress, None, dict[str, Any]]:
        t0, c0 = time.perf_counter(), time.process_time()
        yield Progress(0.01, "building the cluster")
        if dynamic == "static":
            from napari_tiltgen.simulate.clusters import build_cluster, describe
            from napari_tiltgen.simulate.series import simulate_tilt_series_iter

            c = dict(cluster)
            if c["variant"] not in ("alloy", "core_shell"):
                c["element2"] = None
            atoms = build_cluster(c.pop("structure"), c.pop("element"), **c)
            label = describe(atoms)
            res = yield from simulate_tilt_series_iter(atoms, **sim)
            out = {"series": res.tilt_series, "volumes": [("ground truth", res.volume)],
                   "label": label}
        else:
            from napari_tiltgen.simulate.dynamic import dynamic_cluster, simulate_dynamic_iter

            ph = dynamic_cluster(dynamic, cluster["element"], structure=cluster["structure"],
                                 shells=cluster["shells"], element2=cluster["element2"],
                                 seed=cluster["seed"])
            res = yield from simulate_dynamic_iter(ph, frame_time_s=frame_time, **sim)
            label = f"{dynamic} {cluster['element']} ({ph.n_atoms_max} atoms)"
            out = {"series": res.tilt_series, "label": label,
                   "volumes": [("ground truth t=0", res.volume_at(0.0)),
                               ("ground truth t=end", res.volume_at(res.total_time_s))]}
        out["elapsed_s"] = time.perf_counter() - t0
        out["cpu_s"] = time.process_time() - c0
        return out

    # ------------------------------------------------------------------ GUI side
    def _add_layers(self, out: dict[str, Any]) -> None:
        from napari.layers import Layer

        ts = out["series"]
        mode = ts.provenance.get("parameters", {}).get("mode", "")
        name = f"{out['label']} ({mode})"
        self.viewer.add_layer(Layer.create(*ts.to_layer_data(name=name)))
        for suffix, vol in out["volumes"]:
            self.viewer.add_layer(Layer.create(*vol.to_layer_data(
                name=f"{out['label']} {suffix}", visible=False)))
        self.last_elapsed_s = float(out["elapsed_s"])
        self.last_cpu_s = float(out["cpu_s"])
        self.note.value = (f"{name}: {ts.n_tilts} frames of {ts.shape[1]} x {ts.shape[2]} px at "
                           f"{ts.pixel_size_A:.3g} Å in {self.last_elapsed_s:.1f} s")

