"""`trace hunt --follow`: rules run continuously over a capture being recorded.

* source.py: finalized segments, then the tail (`current.arrows`), each row once;
* state.py: libsinsp state carried from batch to batch through analyzer/state's builder;
* follower.py: the loop (state -> one rule scan -> sinks -> checkpoint);
* checkpoint.py, sinks.py: restart without duplicates or gaps; stdout, `-o`, webhook;
* cli.py: what `trace hunt --follow` calls.
"""
