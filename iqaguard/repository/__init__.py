"""The model repository, the one interface between the build and the server.

- layout: where it is, file names, member tensor names, versions, what a servable one holds.
- manifest: what each built version records (paths relative to the repository), artifact metadata.
- writer: how the build writes a model set (atomic versions, set files, pruning).
- check: the static check of configs and ensemble wiring (`python -m iqaguard.repository.check`).
"""
