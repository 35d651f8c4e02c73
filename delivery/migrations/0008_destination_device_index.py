"""`DestinationDevice.destination` loses its own index (issue 13).

The unique (destination, device) index, `one_state_per_pair`, starts with the same column and serves
every lookup by destination (and the cascade when one is deleted). The claim and the end of each
request rewrite their devices' rows with indexed columns changing (no HOT update), so every row
version went into 7 indexes; now 6.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('delivery', '0007_batch_writes'),
        ('destinations', '0006_circuit_breaker'),
    ]

    operations = [
        migrations.AlterField(
            model_name='destinationdevice',
            name='destination',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='destinations.destination'),
        ),
    ]
