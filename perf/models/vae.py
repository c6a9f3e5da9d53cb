"""The VAE of PyTorch's examples (vae/main.py): an MLP encoder to a 20-dim Gaussian, the
reparameterization trick with randn_like, an MLP decoder, binary cross-entropy + KL divergence,
Adam. Synthetic 28x28 "images" in [0, 1].

In: a torch-like module, a size, a numpy Generator. Out: a perf.models.Case.
"""

from __future__ import annotations

BATCH = {"tiny": 4, "small": 128}


def build(torch, size, rng):
    from perf.models import Case

    nn, F, optim = torch.nn, torch.nn.functional, torch.optim

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(784, 400)
            self.fc21 = nn.Linear(400, 20)
            self.fc22 = nn.Linear(400, 20)
            self.fc3 = nn.Linear(20, 400)
            self.fc4 = nn.Linear(400, 784)

        def encode(self, x):
            h1 = F.relu(self.fc1(x))
            return self.fc21(h1), self.fc22(h1)

        def reparameterize(self, mu, logvar):
            std = torch.exp(0.5 * logvar)
            eps = torch.randn_like(std)
            return mu + eps * std

        def decode(self, z):
            h3 = F.relu(self.fc3(z))
            return torch.sigmoid(self.fc4(h3))

        def forward(self, x):
            mu, logvar = self.encode(x.view(-1, 784))
            z = self.reparameterize(mu, logvar)
            return self.decode(z), mu, logvar

    def loss_function(recon_x, x, mu, logvar):
        BCE = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
        KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return BCE + KLD

    model = VAE()
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    data = torch.tensor(rng.random((BATCH[size], 1, 28, 28), dtype="float32"))

    def train_step(data):
        model.train()
        optimizer.zero_grad()
        recon_batch, mu, logvar = model(data)
        loss = loss_function(recon_batch, data, mu, logvar)
        loss.backward()
        optimizer.step()
        return loss

    def infer(data):
        model.eval()
        with torch.no_grad():
            recon_batch, mu, logvar = model(data)
            return loss_function(recon_batch, data, mu, logvar)

    return Case("vae", {"model": model}, (data,), train_step, infer, [optimizer])
