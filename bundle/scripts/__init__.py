"""Bundle-specific entry points (importable as ``scripts`` once MONAI puts the bundle root on
``sys.path``). The code that the configs reference lives in the installed package, in
:mod:`artasyn.bundle_utils`, so that it is importable before ``initialize`` as well."""
