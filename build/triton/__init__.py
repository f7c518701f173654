"""Triton Inference Server: a model repository over a built target, and a local `tritonserver` to serve it.

`repository.write_repository` writes REPO/<model>/{config.pbtxt, <version>/{model.py, engines/, version.json}}: a
Python-backend model that runs the thin runtime over a copy of the target directory; `config.build_config` turns
the manifest into config.pbtxt; `server` finds and starts a tritonserver (NVIDIA's install or the binary bundled in
the nvidia-pytriton wheel); `client` sends one generation request; `load` measures throughput and latency.
"""
