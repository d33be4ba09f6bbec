"""What the scripts other than training run, each from a checkpoint: ``reconstruct``, ``evaluate``, ``generate``,
and ``fd_vgg`` between two image folders. ``inputs`` finds their input files and picks their device."""
