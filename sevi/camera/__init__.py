"""The camera and what undoes it: camera frames from electron hits (the course's spot model), the
direct image (summed frames), centroiding and its parts, the chunked centroiding of a frame
file, and recall ceilings. Imports ``sevi.physics`` and below."""
