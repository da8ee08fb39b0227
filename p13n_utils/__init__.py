"""p13n_utils: the small shared package behind the p13n notebooks.

One module per concern: config, data, models, generation, retrieval, prompts, personas,
finetune, alignment, recsys, metrics, plotting, results, run, taxonomy.
"""

__version__ = "0.1.0"
