"""The MNIST CNN of PyTorch's examples (mnist/main.py): two 3x3 convolutions, max-pool, dropout, two
Linears, log_softmax + nll_loss, Adadelta with StepLR. Synthetic 28x28 images.

In: a torch-like module, a size, a numpy Generator. Out: a perf.models.Case.
"""

from __future__ import annotations

BATCH = {"tiny": 2, "small": 64}


def build(torch, size, rng):
    from perf.models import Case

    nn, F, optim = torch.nn, torch.nn.functional, torch.optim
    StepLR = torch.optim.lr_scheduler.StepLR

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3, 1)
            self.conv2 = nn.Conv2d(32, 64, 3, 1)
            self.dropout1 = nn.Dropout(0.25)
            self.dropout2 = nn.Dropout(0.5)
            self.fc1 = nn.Linear(9216, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = self.conv1(x)
            x = F.relu(x)
            x = self.conv2(x)
            x = F.relu(x)
            x = F.max_pool2d(x, 2)
            x = self.dropout1(x)
            x = torch.flatten(x, 1)
            x = self.fc1(x)
            x = F.relu(x)
            x = self.dropout2(x)
            x = self.fc2(x)
            output = F.log_softmax(x, dim=1)
            return output

    model = Net()
    optimizer = optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.7)
    b = BATCH[size]
    data = torch.tensor((rng.random((b, 1, 28, 28), dtype="float32") - 0.1307) / 0.3081)
    target = torch.tensor(rng.integers(0, 10, b))

    def train_step(data, target):
        model.train()
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        scheduler.step()  # once per epoch in the reference; an epoch is one batch here
        return loss

    def infer(data, target):
        model.eval()
        with torch.no_grad():
            output = model(data)
            return F.nll_loss(output, target, reduction="sum"), output.argmax(dim=1, keepdim=True)

    return Case("mnist", {"model": model}, (data, target), train_step, infer, [optimizer])
