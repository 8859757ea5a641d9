"""Analysis engine: circuits (expanded weights, class support), receptive fields, dataset
examples, activation samples and their 2-D layout. Built on units, hooks and the streaming
pass; never imports another engine, tasks or pages (docs/architecture.md)."""
