"""Generation backends: in-process transformers + peft (`local`) and a remote TGI server (`tgi`)."""
