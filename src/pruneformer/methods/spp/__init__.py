"""SPP, one feature in one package: the linearized-Bregman iteration (``lbi``), the search method on the
lifecycle (``search``), the solution path it records (``record``, the path's file format) and its plots."""
