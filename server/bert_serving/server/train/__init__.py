"""bert-serving-train: continued pre-training and fine-tuning of the models the server loads.

Both subcommands start from any model directory `bert-serving-start -model_dir` accepts and
write a Google-format model directory that `bert-serving-start -tuned_model_dir` serves.
`model` contains the trainable Keras BERT, `data` reads and checks the input files,
`pretrain` and `finetune` run the two objectives, `loop` has the parts they share and
`cli` parses the flags.
"""
