"""HTTP routes, one module per family: model endpoints, search/products, operations."""
