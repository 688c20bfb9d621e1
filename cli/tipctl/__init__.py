"""tipctl: the operator's and admin's command line, a thin layer over tipstream's services."""
