"""The local web app (``motionprop app``): propagate, animate and annotate in a browser.

``sessions`` (the state and the inference lock) and ``images`` (upload checks)
need only numpy, torch and Pillow; ``server`` (the Starlette routes) needs the
optional extra ``app`` (``pip install 'motionprop[app]'``) and is imported only
by ``motionprop app``, so ``import motionprop`` never imports a web framework.
The page is plain JavaScript in ``static/`` (ES modules, no build step), shipped
as package data.
"""
