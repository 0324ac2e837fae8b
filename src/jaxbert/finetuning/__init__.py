"""Fine-tuning: tasks and their data (tasks, squad), the classification machinery (finetune), the span head
(qa), a fine-tuning output directory made and used (runs), and the reports (glue, transfer)."""
