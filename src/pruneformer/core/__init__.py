"""The vocabulary every layer above shares and nothing in it depends on: what a sparsity pattern is
(``patterns``), which Linears of a model are pruned (``targets``), the paired dimensions that methods and
physical compression both speak of without importing each other (``structure``), and how sparse a model is
(``sparsity``)."""
