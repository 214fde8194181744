"""Apache Beam pipelines of the package, for work beyond one machine (the ``beam`` extra).

`reslstm_tf.pipelines.extract` extracts a feature cache as reslstm-extract does, on any Beam
runner (DirectRunner, Flink, Spark, Dataflow); `reslstm_tf.pipelines.shards` writes its files.
``reslstm-beam extract`` (`reslstm_tf.cli.beam`) runs it from the command line; docs/beam.md
tells how to run it on a cluster.
"""
