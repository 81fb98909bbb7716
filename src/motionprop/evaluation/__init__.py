"""Transfer evaluation of pre-trained image encoders on DAVIS: label propagation and a linear probe.

* :mod:`.metrics`: J and F as davis2017-evaluation defines them (pure functions).
* :mod:`.davis`: walking a DAVIS folder (2016 binary or 2017 palette masks).
* :mod:`.encoders`: ENCODER arguments -> frozen stride-8 feature extractors.
* :mod:`.propagation`, :mod:`.probe`: the two tasks.
* :mod:`.benchmark`: ``run_transfer``, what ``motionprop transfer`` runs; :mod:`.report`: its tables and pictures.
"""
