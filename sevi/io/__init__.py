"""Files: the course's HDF5 tables, camera-frame and events files, answer files, image files,
atomic writes and the refusal of an output that would overwrite an input. Imports only
``sevi.runtime``."""
