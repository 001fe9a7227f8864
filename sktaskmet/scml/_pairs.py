r"""The distinct pairs of a triplet set, and the triplet margins of a metric from them.

The full SCML objective needs, for every triplet :math:`(a, p, n)`, the margin
:math:`\Delta_t = d(a, p) - d(a, n)` of a metric given by an embedding :math:`x \mapsto Lx`
(:math:`d(u, v) = \lVert Lu - Lv\rVert^2`). Triplets share pairs (each genuine pair appears
with every impostor of its anchor), so :class:`TripletPairs` computes each pair distance
once and gathers scalars per triplet.
"""

import torch

__all__ = ["PAIR_CHUNK", "TripletPairs"]

# Pairs per chunk of the pair differences: bounds the two (chunk, width) buffers.
PAIR_CHUNK = 4096


class TripletPairs:
    """The distinct (anchor, other) pairs of a triplet set, and where each triplet's lie.

    The pair differences are formed a chunk at a time in buffers kept between calls (the
    objective is evaluated many times per solve).

    The pairs are sorted by anchor. When every anchor has the same number ``c`` of pairs
    (the triplets of :func:`regression_triplets` when every ordering is strict), they are
    also kept as an (anchors, c) table: a chunk then gathers each anchor's embedding once
    and subtracts it from its ``c`` partners by broadcasting, instead of gathering it
    ``c`` times.

    Parameters
    ----------
    triplets : torch.Tensor of shape (n_triplets, 3)
        Row indices (anchor, genuine, impostor).
    n_samples : int
        Number of rows the indices point into.
    """

    def __init__(self, triplets, n_samples):
        # Pair keys anchor * n + other; in int32 when they fit (the sort behind unique runs
        # about a third faster on them than on int64).
        if n_samples * n_samples <= torch.iinfo(torch.int32).max:
            triplets = triplets.to(torch.int32)
        keys = torch.cat(
            [
                triplets[:, 0] * n_samples + triplets[:, 1],
                triplets[:, 0] * n_samples + triplets[:, 2],
            ]
        )
        unique, inverse = torch.unique(keys, return_inverse=True)
        unique, inverse = unique.long(), inverse.long()
        self.first = torch.div(unique, n_samples, rounding_mode="floor")
        self.second = unique - self.first * n_samples
        self.genuine, self.impostor = inverse.split(keys.shape[0] // 2)
        self.n_triplets = triplets.shape[0]
        self.group_size, self.anchors = self._uniform_groups(self.first)
        self._buffers = None

    @staticmethod
    def _uniform_groups(first):
        """(c, the anchors) if the sorted anchors each occur c times, else (None, None)."""
        anchors, counts = torch.unique_consecutive(first, return_counts=True)
        if anchors.shape[0] == 0 or not bool((counts == counts[0]).all()):
            return None, None
        return int(counts[0]), anchors

    def scratch(self, name, size, like):
        """A reusable work vector ``name`` of ``size`` entries, of the dtype of ``like``.

        Kept between calls: fresh vectors of ``n_triplets`` entries at every evaluation
        would cost page faults.
        """
        if self._buffers is None or self._buffers["dtype"] != like.dtype:
            self._buffers = {"dtype": like.dtype}
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < size:
            # With room to grow: the width of the embeddings varies from one evaluation
            # to the next, and each new buffer costs page faults when first written.
            grown = size if buffer is None else max(size, 3 * buffer.numel() // 2)
            buffer = self._buffers[name] = like.new_empty(grown)
        return buffer[:size]

    def margins(self, *embeddings, chunk_size=PAIR_CHUNK, reuse=False):
        r""":math:`\Delta_t = d(a, p) - d(a, n)` for every triplet, from embeddings.

        Each embedding (shape (n_samples, r)) defines one metric; several are handled in
        one pass over the pairs. Returns shape (n_triplets,) for one embedding, else
        (n_embeddings, n_triplets). With ``reuse=True`` the result is a view of a buffer
        that the next such call overwrites (no allocation per evaluation of the objective).
        """
        widths = [embedding.shape[1] for embedding in embeddings]
        if len(embeddings) > 1:
            total = sum(widths)
            embedded = self.scratch("embedded", embeddings[0].shape[0] * total, embeddings[0])
            embedded = torch.cat(embeddings, dim=1, out=embedded.view(-1, total))
        else:
            embedded = embeddings[0]
        distances = self._pair_distances(embedded, widths, chunk_size)
        if reuse:
            margins = self.scratch("margins", len(widths) * self.n_triplets, embedded)
            margins = margins.view(len(widths), self.n_triplets)
        else:
            margins = embedded.new_empty((len(widths), self.n_triplets))
        impostor = self.scratch("impostor", self.n_triplets, embedded)
        for index in range(len(widths)):  # 1-d gathers: far faster than along dim 1
            torch.index_select(distances[index], 0, self.genuine, out=margins[index])
            torch.index_select(distances[index], 0, self.impostor, out=impostor)
            margins[index].sub_(impostor)
        return margins[0] if len(embeddings) == 1 else margins

    def _pair_distances(self, embedded, widths, chunk_size):
        """Squared distance of every pair in each metric (column groups ``widths`` of
        ``embedded``), shape (n_metrics, n_pairs), in a scratch buffer."""
        n_pairs, width = self.first.shape[0], embedded.shape[1]
        # Chunks of whole anchor groups when the pairs form a table.
        group = self.group_size or 1
        chunk_size = min(max(chunk_size // group, 1) * group, n_pairs)
        other = self.scratch("other", chunk_size * width, embedded)
        anchor = self.scratch("anchor", chunk_size * width, embedded)
        distances = self.scratch("distances", len(widths) * n_pairs, embedded)
        distances = distances.view(len(widths), n_pairs)
        for start in range(0, n_pairs, chunk_size):
            stop = min(start + chunk_size, n_pairs)
            diff = other[: (stop - start) * width].view(stop - start, width)
            torch.index_select(embedded, 0, self.second[start:stop], out=diff)
            if self.group_size is None:
                first = anchor[: (stop - start) * width].view(stop - start, width)
                torch.index_select(embedded, 0, self.first[start:stop], out=first)
                torch.sub(first, diff, out=diff)
            else:
                rows = (stop - start) // group
                first = anchor[: rows * width].view(rows, 1, width)
                anchors = self.anchors[start // group : stop // group]
                torch.index_select(embedded, 0, anchors, out=first.view(rows, width))
                torch.sub(first, diff.view(rows, group, width), out=diff.view(rows, group, width))
            # Squares in one pass, then the sum of each metric's columns: the values of
            # torch.linalg.vecdot(part, part) (which multiplies, then sums), with one
            # multiplication pass instead of one per metric.
            diff.mul_(diff)
            for index, part in enumerate(diff.split(widths, dim=1)):
                torch.sum(part, 1, out=distances[index, start:stop])
        return distances
