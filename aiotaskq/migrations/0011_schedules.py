# Periodic tasks (docs/periodic.md): a row per schedule with the last tick done with,
# which every worker that knows the schedule moves on with a compare-and-set in the statement
# that inserts the tick's task; the tick a task runs for (TaskContext.scheduled_for); and an
# index of the schedules' runs still queued or running, for overlap="skip".

import django.db.models.functions.datetime
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('aiotaskq', '0010_long_jobs'),
    ]

    operations = [
        migrations.CreateModel(
            name='Schedule',
            fields=[
                ('name', models.CharField(help_text="The schedule's id.", max_length=200, primary_key=True, serialize=False)),
                ('task', models.CharField(help_text='The task it enqueues.', max_length=255)),
                ('last_tick', models.DateTimeField(blank=True, help_text='Ticks up to this one are done with (enqueued, skipped, or before the schedule was first seen).', null=True)),
                ('last_run', models.DateTimeField(blank=True, help_text='The last tick whose task was enqueued.', null=True)),
                ('paused', models.BooleanField(db_default=False, default=False)),
                ('updated_at', models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
            ],
            options={
                'db_table': 'aiotaskq_schedule',
                'default_permissions': ('view', 'change', 'delete'),
            },
        ),
        migrations.AddField(
            model_name='task',
            name='scheduled_for',
            field=models.DateTimeField(blank=True, help_text='The tick of the periodic schedule this run is for.', null=True),
        ),
        migrations.AddIndex(
            model_name='task',
            index=models.Index(condition=models.Q(('scheduled_for__isnull', False), ('state__in', ['queued', 'running'])), fields=['name'], name='aiotaskq_task_periodic'),
        ),
    ]
