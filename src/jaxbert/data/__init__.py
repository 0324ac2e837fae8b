"""Loading data, one way from the source to batches: corpus files (corpus, wikitext, imdb) are read into
documents of sentences, tokenized (tokenization, sentence_ids, word_table), written as prepared arrays
(prepare), cut into sentence-pair instances (instances), masked into rows (masking, on hashing), and
served as the batches of a step (batches)."""
