from .evaluation_plots import per_class_scores, write_evaluation_plots

__all__ = ['per_class_scores', 'write_evaluation_plots']
