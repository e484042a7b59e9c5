"""The ONNX Runtime CPU session settings every edgeasr graph runs with (bundles, Smart Turn, Silero)."""

from __future__ import annotations


def cpu_session_options(threads: int | None = None):
    """`onnxruntime.SessionOptions` with `threads` intra-op threads (None: ORT's default) whose idle threads sleep.

    Spinning pool threads steal the core that the decoder loop's Python, the features and a concurrent Smart
    Turn score need on a 2-core board (moonshine-tiny W4, 16 clips: 1.75 s sleeping vs 2.13 s spinning;
    whisper-tiny.en W8 9.86 s vs 11.53 s; a Smart Turn score beside a decode ~170 ms vs ~240 ms).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options
